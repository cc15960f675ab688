"""Adapter: rule trial_dataset -> biohuman.pipeline.step_trial_dataset (status record output)."""
from pathlib import Path

from biohuman.config import config_hash
from biohuman.pipeline import step_trial_dataset
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
status = Path(sm.output.status)
run_step("trial_dataset", status, sm.log[0], step_trial_dataset,
         trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}",
         upstream={"scale": sm.input.scale, "ik": sm.input.ik, "grf": sm.input.grf, "id": sm.input.id,
                   "activations": sm.input.activations},
         config=sm.params.config, trial=sm.params.trial, out_path=status.parent / f"{sm.wildcards.trial}.nc",
         config_hash=config_hash(sm.params.config),
         render_status=sm.input.render if sm.input.render else None)
