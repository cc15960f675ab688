"""Adapter: rule render -> biohuman.pipeline.step_render (status record output)."""
from pathlib import Path

from biohuman.pipeline import step_render
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
run_step("render", sm.output.status, sm.log[0], step_render, trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}",
         upstream={"scale": sm.input.scale, "ik": sm.input.ik}, config=sm.params.config, trial=sm.params.trial,
         out_dir=Path(sm.output.status).parent)
