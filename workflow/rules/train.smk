# Training and held-out evaluation (docs/training.md): front-end features per (trial, camera),
# splits, three trained models per split (end_to_end, pose_stage, pose_to_activation), evaluation.
from biohuman.train.run import METHODS as TRAIN_METHODS, train_cameras
from biohuman.train.splits import SPLIT_NAMES

TRAIN_CAMERAS = train_cameras(config)


wildcard_constraints:
    camera=r"[A-Za-z0-9_-]+",
    split="|".join(SPLIT_NAMES),
    method="|".join(TRAIN_METHODS),


rule features:
    """Front-end features of one camera of one labelled trial (biohuman.nn.frontend.cache_features)."""
    input:
        dataset=f"{R}/dataset/{{subject}}/{{trial}}.status.json",
    output:
        status=f"{R}/features/{{subject}}/{{trial}}/{{camera}}.status.json",
    params:
        frontend=config["train"]["frontend"],
    log:
        f"{R}/logs/features/{{subject}}/{{trial}}/{{camera}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/features.py"


rule train_splits:
    """held_out_subjects and held_out_motions splits (leak-checked) of the dataset's usable trials."""
    input:
        manifest=f"{R}/dataset/manifest.csv",
    output:
        f"{R}/train/splits.json",
    params:
        config=config,
    log:
        f"{R}/logs/train/splits.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_splits.py"


rule train_method:
    """Train one method on one split; checkpoints, history.jsonl and the selected model.pt."""
    input:
        splits=f"{R}/train/splits.json",
        features=[f"{R}/features/{t.subject}/{t.trial}/{cam}.status.json" for t in PLAN.trials for cam in TRAIN_CAMERAS],
    output:
        model=f"{R}/train/{{split}}/{{method}}/model.pt",
    params:
        config=config,
    threads: 1
    log:
        f"{R}/logs/train/{{split}}/{{method}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_method.py"


rule evaluate:
    """Every method on both held-out splits -> metrics.json (+ CIs), per_muscle.json, per_motion.json and plots."""
    input:
        splits=f"{R}/train/splits.json",
        models=[f"{R}/train/{s}/{m}/model.pt" for s in SPLIT_NAMES for m in TRAIN_METHODS],
    output:
        metrics=f"{R}/eval/metrics.json",
    params:
        config=config,
    log:
        f"{R}/logs/eval/evaluate.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"
