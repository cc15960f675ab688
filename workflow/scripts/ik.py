"""Adapter: rule ik -> biohuman.pipeline.step_ik (status record output)."""
from pathlib import Path

from biohuman.pipeline import step_ik
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
run_step("ik", sm.output.status, sm.log[0], step_ik, trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}",
         upstream={"scale": sm.input.scale}, config=sm.params.config, trial=sm.params.trial, trc=sm.input.trc,
         out_dir=Path(sm.output.status).parent)
