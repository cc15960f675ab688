"""Adapter: rule features -> biohuman.train.run.step_features (status record output)."""
from pathlib import Path

from biohuman.train.run import step_features
from biohuman.workflow import run_step

sm = snakemake  # type: ignore[name-defined] # noqa: F821
status = Path(sm.output.status)
run_step("features", status, sm.log[0], step_features, trial_id=f"{sm.wildcards.subject}/{sm.wildcards.trial}",
         upstream={"dataset": sm.input.dataset},
         trial_nc=Path(sm.input.dataset).with_name(f"{sm.wildcards.trial}.nc"), camera=sm.wildcards.camera,
         out_npz=status.with_name(f"{sm.wildcards.camera}.npz"), frontend=sm.params.frontend)
