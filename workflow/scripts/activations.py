"""Adapter: rule activations -> biohuman.pipeline.step_activations (status record output)."""
from pathlib import Path

from biohuman.pipeline import step_activations
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
upstream = {k: sm.input[k] for k in ("scale", "ik", "grf", "id", "surrogate") if k in sm.input.keys()}
run_step("activations", sm.output.status, sm.log[0], step_activations,
         trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}", upstream=upstream,
         config=sm.params.config, trial={"trial": sm.wildcards.trial}, out_dir=Path(sm.output.status).parent)
