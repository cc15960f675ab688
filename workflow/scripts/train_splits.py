"""Adapter: rule train_splits -> biohuman.train.run.write_splits."""
from biohuman.train.run import write_splits
from biohuman.workflow import logged

sm = snakemake  # type: ignore[name-defined] # noqa: F821
with logged(sm.log[0]) as log:
    splits = write_splits(sm.params.config, sm.output[0])
    for name, s in splits.items():
        log.info("%s: %d train, %d val, %d test trials", name, len(s.train), len(s.val), len(s.test))
