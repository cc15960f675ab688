"""Adapter: rule ingest_static -> biohuman.ingest.step_ingest_static (status record output)."""
from pathlib import Path

from biohuman.ingest import step_ingest_static
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
run_step("ingest_static", sm.output.status, sm.log[0], step_ingest_static, trial_id=f"{sm.wildcards.subject}/static",
         config=sm.params.config, subject=sm.params.subject, out_dir=Path(sm.output.status).parent)
