"""Adapter: rule synth_trial -> biohuman.motion.generate.generate_trial."""
from pathlib import Path

from biohuman.motion.generate import generate_trial
from biohuman.workflow import logged

sm = snakemake  # type: ignore[name-defined] # noqa: F821
with logged(sm.log[0]):
    generate_trial(sm.params.config, sm.wildcards.subject, sm.wildcards.trial, true_model=Path(sm.input.model),
                   subject_truth=Path(sm.input.truth), trc=Path(sm.output.trc),
                   coordinates=Path(sm.output.coordinates), truth=Path(sm.output.truth))
