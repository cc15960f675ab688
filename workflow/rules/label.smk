# Per-subject scaling and per-trial labelling. Every rule's output is a status record (JSON)
# naming its artefacts; a BiohumanError is caught and recorded as status "failed", and later
# steps record "skipped", so one bad trial never stops the others and is never lost from view.


rule scale:
    """OpenSim ScaleTool on the static trial, then verified marker placement."""
    input:
        static=static_trc,
        sheet=subject_sheet,
    output:
        status=f"{R}/scale/{{subject}}/scale.status.json",
    params:
        config=LABEL_CONFIG,
    log:
        f"{R}/logs/scale/{{subject}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/scale.py"


rule ik:
    """OpenSim inverse kinematics of one trial, then low-pass filtering of the coordinates."""
    input:
        trc=source_trc,
        scale=f"{R}/scale/{{subject}}/scale.status.json",
    output:
        status=f"{R}/ik/{{subject}}/{{trial}}.status.json",
    params:
        config=LABEL_CONFIG,
        trial=lambda wc: PLAN.trial(wc.subject, wc.trial).to_dict(),
    log:
        f"{R}/logs/ik/{{subject}}/{{trial}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/ik.py"


rule ground_forces:
    """Measured ground forces when the trial has them, else estimated from whole-body dynamics."""
    input:
        ik=f"{R}/ik/{{subject}}/{{trial}}.status.json",
        scale=f"{R}/scale/{{subject}}/scale.status.json",
    output:
        status=f"{R}/grf/{{subject}}/{{trial}}.status.json",
    params:
        config=LABEL_CONFIG,
        trial=lambda wc: PLAN.trial(wc.subject, wc.trial).to_dict(),
    log:
        f"{R}/logs/ground_forces/{{subject}}/{{trial}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/ground_forces.py"


rule inverse_dynamics:
    """Inverse dynamics with the trial's ground forces (inverse_dynamics.solver: nimble | opensim)."""
    input:
        ik=f"{R}/ik/{{subject}}/{{trial}}.status.json",
        grf=f"{R}/grf/{{subject}}/{{trial}}.status.json",
        scale=f"{R}/scale/{{subject}}/scale.status.json",
    output:
        status=f"{R}/id/{{subject}}/{{trial}}.status.json",
    params:
        config=LABEL_CONFIG,
    log:
        f"{R}/logs/inverse_dynamics/{{subject}}/{{trial}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/inverse_dynamics.py"


rule muscle_surrogate:
    """One muscle-geometry surrogate per subject (batched_so), sampled over all its trials' ranges."""
    input:
        scale=f"{R}/scale/{{subject}}/scale.status.json",
        ik=subject_ik_statuses,
    output:
        status=f"{R}/surrogate/{{subject}}/surrogate.status.json",
    params:
        config=LABEL_CONFIG,
    log:
        f"{R}/logs/muscle_surrogate/{{subject}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/muscle_surrogate.py"


rule activations:
    """Muscle activations with the configured solver (activation_solver)."""
    input:
        unpack(activation_inputs),
    output:
        status=f"{R}/activations/{{subject}}/{{trial}}.status.json",
    params:
        config=LABEL_CONFIG,
    log:
        f"{R}/logs/activations/{{subject}}/{{trial}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/activations.py"


rule external_subject:
    """Subject sheet (mass, height) of an external subject, from the config's trials table."""
    output:
        sheet=f"{R}/external/{{subject}}/subject.yaml",
    params:
        subject=lambda wc: PLAN.external_subjects[wc.subject],
    log:
        f"{R}/logs/external_subject/{{subject}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/external_subject.py"
