include: "functions/sweep.smk"


# One sweep run: the model fine-tuned on sweep.dataset with the run's train keys for
# sweep.steps, its spillover monitor evaluating every sweep.eval_every steps.
rule sweep_finetune:
    input:
        base=layout.base_model(),
        dataset=sweep_dataset,
        eval_questions=layout.questions(config["finetune"]["eval_questions"]),
    output:
        adapter=directory(layout.sweep_adapter()),
    log:
        "logs/sweep/{model}/{run}.log",
    benchmark:
        "benchmarks/out/sweep/{model}/{run}.tsv"
    wildcard_constraints:
        model=MODEL_RE,
        run=alternation(SWEEP_RUNS),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        runtime=240,
    params:
        ft_cfg=sweep_cfg,
        sampling_cfg=sweep_sampling,
        # Only the detector thresholds matter to the spillover monitor.
        judge_cfg={"offline": config["judge"]["offline"]},
        ft_spec={"dataset": SWEEP["dataset"]},
    script:
        "../scripts/sweep_finetune.py"


# The sweep's table, summary and figure (on demand: snakemake results/sweep/budget.csv).
rule budget_sweep:
    input:
        adapters=values(sweep_adapters),
    output:
        csv=layout.SWEEP["csv"],
        summary=layout.SWEEP["summary"],
        png=report(
            layout.SWEEP["png"],
            caption="../report/budget_sweep.rst",
            category="Training",
            labels={"figure": "training-budget sweep"},
        ),
    log:
        "logs/sweep/budget.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        adapters=sweep_adapters,
        train_cfgs=sweep_train_cfgs,
        regime=SWEEP["regime"],
        level=config["stats"]["level"],
    script:
        "../scripts/budget_sweep.py"
