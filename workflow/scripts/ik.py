"""Adapter: rule ik -> biohuman.pipeline.step_ik (status record output)."""
from pathlib import Path

from biohuman.ingest import resolve_input
from biohuman.pipeline import step_ik
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
ingest, trc = resolve_input(sm.input.trc)  # an ingest record (c3d / smpl / mapped trc) names the TRC
run_step("ik", sm.output.status, sm.log[0], step_ik, trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}",
         upstream={"scale": sm.input.scale, **ingest}, config=sm.params.config, trial=sm.params.trial, trc=trc,
         out_dir=Path(sm.output.status).parent)
