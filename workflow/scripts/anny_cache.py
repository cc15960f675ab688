"""Adapter: rule anny_cache -> biohuman.render.build_anny_cache."""
from pathlib import Path

from biohuman.render import build_anny_cache
from biohuman.workflow import logged

sm = snakemake  # type: ignore[name-defined] # noqa: F821
with logged(sm.log[0]):
    build_anny_cache(Path(sm.output.ready).parent)
