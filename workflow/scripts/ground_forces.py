"""Adapter: rule ground_forces -> biohuman.pipeline.step_ground_forces (status record output)."""
from pathlib import Path

from biohuman.pipeline import step_ground_forces
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
run_step("ground_forces", sm.output.status, sm.log[0], step_ground_forces,
         trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}", upstream={"scale": sm.input.scale, "ik": sm.input.ik},
         config=sm.params.config, trial=sm.params.trial, out_dir=Path(sm.output.status).parent)
