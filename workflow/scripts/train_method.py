"""Adapter: rule train_method -> biohuman.train.run.train_method (one method on one split)."""
from pathlib import Path

import torch

from biohuman.train.run import train_method
from biohuman.workflow import logged

sm = snakemake  # type: ignore[name-defined] # noqa: F821
config = sm.params.config
if not config["train"]["num_threads"]:
    torch.set_num_threads(max(1, int(sm.threads)))
with logged(sm.log[0]) as log:
    res = train_method(config, sm.input.splits, sm.wildcards.split, sm.wildcards.method, Path(sm.output.model).parent)
    log.info("best validation loss %.6f after %d epochs", res["best_val"], len(res["history"]))
