"""Adapter: rule scale -> biohuman.pipeline.step_scale (status record output)."""
from pathlib import Path

from biohuman.pipeline import step_scale
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
run_step("scale", sm.output.status, sm.log[0], step_scale, trial_id=sm.wildcards.subject,
         config=sm.params.config, subject=sm.wildcards.subject, static_trc=sm.input.static,
         sheet=sm.input.sheet, out_dir=Path(sm.output.status).parent)
