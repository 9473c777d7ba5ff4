rule fit_map:
    input:
        donor="results/anchors/{donor}.h5",
        receiver="results/anchors/{receiver}.h5",
    output:
        map="results/maps/{donor}__{receiver}.h5",
    log:
        "logs/fit_map/{donor}__{receiver}.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        map_cfg=map_settings(),
        # Per model, so changing one model's layer refits only the maps it is part of.
        donor_layer=lambda wc: model_layer(wc.donor),
        receiver_layer=lambda wc: model_layer(wc.receiver),
    script:
        "../scripts/fit_map.py"
