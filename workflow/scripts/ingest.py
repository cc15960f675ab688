"""Adapter: rule ingest -> biohuman.ingest.step_ingest (status record output)."""
from pathlib import Path

from biohuman.ingest import step_ingest
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
run_step("ingest", sm.output.status, sm.log[0], step_ingest, trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}",
         config=sm.params.config, trial=sm.params.trial, out_dir=Path(sm.output.status).parent)
