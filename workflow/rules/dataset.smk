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
        render=render_input,
    output:
        status=f"{R}/dataset/{{subject}}/{{trial}}.status.json",
    params:
        config=LABEL_CONFIG,
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


rule anny_cache:
    """Build Anny's body-model cache once, before any parallel render job reads it."""
    output:
        ready=f"{ANNY_CACHE}/biohuman_anny_cache.json",
    log:
        f"{R}/logs/anny_cache/anny_cache.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/anny_cache.py"


rule render:
    """Synchronized video of one trial from every configured camera (MP4s + projections)."""
    input:
        ik=f"{R}/ik/{{subject}}/{{trial}}.status.json",
        scale=f"{R}/scale/{{subject}}/scale.status.json",
        cache=f"{ANNY_CACHE}/biohuman_anny_cache.json",
    output:
        status=f"{R}/render/{{subject}}/{{trial}}.status.json",
    params:
        config=LABEL_CONFIG,
        trial=lambda wc: PLAN.trial(wc.subject, wc.trial).to_dict(),
    log:
        f"{R}/logs/render/{{subject}}/{{trial}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/render.py"
