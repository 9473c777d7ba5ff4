from emdir.settings import map_settings


rule fit_map:
    input:
        donor=layout.anchors("{donor}"),
        receiver=layout.anchors("{receiver}"),
    output:
        map=layout.ridge_map(),
    log:
        "logs/{seed}fit_map/{donor}__{receiver}.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        map_cfg=map_settings(config),
        # Per model, so changing one model's layer refits only the maps it is part of.
        donor_layer=donor_layer,
        receiver_layer=receiver_layer,
    script:
        "../scripts/fit_map.py"
