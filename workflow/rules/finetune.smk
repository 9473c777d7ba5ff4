rule finetune:
    input:
        base="results/models/{model}/base",
        dataset=ft_dataset,
        eval_questions=eval_questions(),
    output:
        adapter=directory("results/adapters/{model}/{ft}"),
    log:
        "logs/finetune/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/finetune/{model}/{ft}.tsv"
    wildcard_constraints:
        ft=FT_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        ft_cfg=config["finetune"],
        sampling_cfg=config["sampling"],
        judge_cfg=config["judge"],
    script:
        "../scripts/finetune.py"
