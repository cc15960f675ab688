"""File formats and the dataset: TRC markers, OpenSim .mot/.sto storage, the dataset spec, trial
NetCDF files, the manifest and status records, and a PyTorch window Dataset.

    import biohuman.io as bio
    ds = bio.open_trial("results/dataset/S01/walk_01.nc")

Names are imported on first use (module `__getattr__`): `import biohuman.io` (or
`biohuman.io.atomic`) imports neither xarray nor torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biohuman.io.dataset import (
        Collection,
        manifest_record,
        open_dataset,
        open_trial,
        open_video,
        read_manifest,
        read_status,
        save_trial,
        write_manifest,
        write_status,
    )
    from biohuman.io.spec import REQUIRED_ATTRS, SPEC_VERSION, VARIABLES, attrs_for, encoding_for, validate
    from biohuman.io.storage import Storage, read_storage, write_storage
    from biohuman.io.torch_dataset import WindowDataset
    from biohuman.io.trc import MarkerData, read_trc, write_trc

_WHERE: dict[str, str] = {
    **dict.fromkeys(["Collection", "manifest_record", "open_dataset", "open_trial", "open_video", "read_manifest", "read_status",
                     "save_trial", "write_manifest", "write_status"], "dataset"),
    **dict.fromkeys(["REQUIRED_ATTRS", "SPEC_VERSION", "VARIABLES", "attrs_for", "encoding_for", "validate"], "spec"),
    **dict.fromkeys(["Storage", "read_storage", "write_storage"], "storage"),
    **dict.fromkeys(["MarkerData", "read_trc", "write_trc"], "trc"),
    "WindowDataset": "torch_dataset",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'biohuman.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"biohuman.io.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
