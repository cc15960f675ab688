"""Adapter: rule reference_activations -> biohuman.reference.step_reference_activations."""
from pathlib import Path

from biohuman.config import config_hash
from biohuman.reference import step_reference_activations
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
run_step("reference_activations", sm.output.status, sm.log[0], step_reference_activations,
         trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}",
         upstream={k: sm.input[k] for k in ("scale", "ik", "grf", "id", "activations")},
         config=sm.params.config, trial=sm.params.trial, solver=sm.wildcards.solver,
         out_dir=Path(sm.output.status).parent, config_hash=config_hash(sm.params.config))
