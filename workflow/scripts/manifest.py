"""Adapter: rule manifest -> biohuman.pipeline.build_manifest."""
from biohuman.pipeline import build_manifest
from biohuman.workflow import logged

sm = snakemake  # type: ignore[name-defined] # noqa: F821
with logged(sm.log[0]):
    build_manifest(list(sm.input), sm.output[0])
