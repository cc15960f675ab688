"""Adapter: rule scale -> biohuman.pipeline.step_scale (status record output)."""
from pathlib import Path

from biohuman.ingest import resolve_input
from biohuman.pipeline import step_scale
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
ingest, static = resolve_input(sm.input.static)  # an ingest record (c3d / smpl / mapped trc) names the TRC
run_step("scale", sm.output.status, sm.log[0], step_scale, trial_id=sm.wildcards.subject,
         upstream=ingest, config=sm.params.config, subject=sm.wildcards.subject, static_trc=static,
         sheet=sm.input.sheet, out_dir=Path(sm.output.status).parent)
