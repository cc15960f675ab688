# Per-trial NetCDF (smoothing, QC, the dataset spec) and the manifest of all trials.


rule trial_dataset:
    """Smooth activations, run QC and write the trial's NetCDF in the dataset spec."""
    input:
        trc=source_trc,
        scale=f"{R}/scale/{{subject}}/scale.status.json",
        ik=f"{R}/ik/{{subject}}/{{trial}}.status.json",
        grf=f"{R}/grf/{{subject}}/{{trial}}.status.json",
        id=f"{R}/id/{{subject}}/{{trial}}.status.json",
        activations=f"{R}/activations/{{subject}}/{{trial}}.status.json",
    output:
        status=f"{R}/dataset/{{subject}}/{{trial}}.status.json",
    params:
        config=config,
        trial=lambda wc: PLAN.trial(wc.subject, wc.trial).to_dict(),
    log:
        f"{R}/logs/trial_dataset/{{subject}}/{{trial}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/trial_dataset.py"


rule manifest:
    """Manifest of every trial (ok / flagged / failed with the reason) from the status records."""
    input:
        [f"{R}/dataset/{t.subject}/{t.trial}.status.json" for t in PLAN.trials],
    output:
        f"{R}/dataset/manifest.csv",
    log:
        f"{R}/logs/manifest/manifest.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/manifest.py"
