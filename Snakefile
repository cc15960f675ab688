# biohuman workflow: motion capture -> OpenSim labels -> dataset.
# Thin on purpose: configuration, schema validation, rule files, targets. All logic lives in the
# biohuman package; rules are adapters (workflow/scripts) that call one biohuman function.
from biohuman.config import labelling_config, validate_config
from biohuman.pipeline import anny_cache_dir
from biohuman.reference import reference_targets
from biohuman.workflow import plan
import os

# Every rule is one single-threaded job per core: keep each job's BLAS / OpenMP pools at one thread
# (jobs inherit this environment; setting it inside a job is too late, numpy is loaded by then).
# Oversubscribed OpenBLAS made the muscle-surrogate least squares 50x slower on 2 busy cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

configfile: "config.yaml"


config.update(validate_config(config))  # schema: workflow/schemas/config.schema.yaml (defaults filled)
LABEL_CONFIG = labelling_config(config)  # what labelling rules see: editing `train` re-labels nothing
PLAN = plan(config)
R = config["results"]
ANNY_CACHE = str(anny_cache_dir(config))

wildcard_constraints:
    subject=r"[A-Za-z0-9_-]+",
    trial=r"[A-Za-z0-9_-]+",


rule all:
    """The dataset: one NetCDF per labelled trial and the manifest of every trial's status."""
    input:
        f"{R}/dataset/manifest.csv",
    default_target: True


rule label:
    """Just the labels: scaled models, IK, ground forces, ID and activations of every trial."""
    input:
        [f"{R}/activations/{t.subject}/{t.trial}.status.json" for t in PLAN.trials],


rule reference:
    """Reference solvers (CMC, MocoInverse) on the window of the trials in reference_solvers."""
    input:
        reference_targets(config, PLAN),


rule train:
    """Train end_to_end and the two-stage baseline on both held-out splits and evaluate them all
    (docs/training.md): metrics.json with per-subject bootstrap CIs, plots."""
    input:
        f"{R}/eval/metrics.json",


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/label.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/train.smk"
