"""Adapter: rule synth_subject -> biohuman.motion.generate.generate_subject."""
from pathlib import Path

from biohuman.motion.generate import generate_subject
from biohuman.workflow import logged

sm = snakemake  # type: ignore[name-defined] # noqa: F821
with logged(sm.log[0]):
    generate_subject(sm.params.config, sm.wildcards.subject, static_trc=Path(sm.output.static),
                     sheet=Path(sm.output.sheet), true_model=Path(sm.output.model), truth=Path(sm.output.truth))
