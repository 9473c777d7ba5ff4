include: "functions/finetune.smk"


rule finetune:
    input:
        base=layout.base_model(),
        dataset=ft_dataset,
        eval_questions=layout.questions(config["finetune"]["eval_questions"]),
    output:
        adapter=directory(layout.adapter()),
    log:
        "logs/{seed}finetune/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/{seed}finetune/{model}/{ft}.tsv"
    wildcard_constraints:
        ft=FT_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        runtime=120,
    params:
        ft_cfg=finetune_cfg,
        sampling_cfg=sampling_cfg,
        # Only the detector thresholds matter to the spillover monitor.
        judge_cfg={"offline": config["judge"]["offline"]},
        ft_spec=lookup(dpath="finetunes/{ft}", within=config),
    script:
        "../scripts/finetune.py"
