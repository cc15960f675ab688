"""Adapter: rule muscle_surrogate -> biohuman.pipeline.step_muscle_surrogate (status record output)."""
from pathlib import Path

from biohuman.pipeline import step_muscle_surrogate
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
run_step("muscle_surrogate", sm.output.status, sm.log[0], step_muscle_surrogate,
         trial_id=f"{sm.wildcards.subject}/surrogate", upstream={"scale": sm.input.scale},
         config=sm.params.config, subject=sm.wildcards.subject, ik_statuses=list(sm.input.ik),
         out_dir=Path(sm.output.status).parent)
