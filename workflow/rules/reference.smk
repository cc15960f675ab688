# Reference activation solvers (OpenSim CMC, MocoInverse) on a window of the trials listed in
# reference_solvers (target `reference`): a trial NetCDF of the window with their activations and
# an agreement JSON against the run's activation_solver. Slow on purpose: validation only.


rule reference_activations:
    """CMC or MocoInverse on the configured window of one trial, stored in the dataset format."""
    input:
        scale=f"{R}/scale/{{subject}}/scale.status.json",
        ik=f"{R}/ik/{{subject}}/{{trial}}.status.json",
        grf=f"{R}/grf/{{subject}}/{{trial}}.status.json",
        id=f"{R}/id/{{subject}}/{{trial}}.status.json",
        activations=f"{R}/activations/{{subject}}/{{trial}}.status.json",
    output:
        status=f"{R}/reference/{{solver}}/{{subject}}/{{trial}}.status.json",
    wildcard_constraints:
        solver="cmc|moco_inverse",
    params:
        config=config,
        trial=lambda wc: PLAN.trial(wc.subject, wc.trial).to_dict(),
    log:
        f"{R}/logs/reference_activations/{{solver}}/{{subject}}/{{trial}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/reference_activations.py"
