"""Adapter: rule evaluate -> biohuman.train.evaluate.evaluate (metrics.json + plots)."""
import json
from pathlib import Path

from biohuman.train.evaluate import evaluate
from biohuman.workflow import logged

sm = snakemake  # type: ignore[name-defined] # noqa: F821
with logged(sm.log[0]) as log:
    res = evaluate(sm.params.config, sm.input.splits, Path(sm.input.splits).parent, sm.output.metrics)
    log.info("%s", json.dumps(res, indent=1))
