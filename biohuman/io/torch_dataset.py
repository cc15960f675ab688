"""A PyTorch Dataset serving fixed-length windows of trial files, read lazily slice by slice.

HDF5 (under netCDF4) is not fork-safe: handles are never opened in `__init__` (sizes are read
and the file closed), each process opens its own handles on first access, and handles inherited
through fork are dropped unused (never closed or read) when the process id changes. Pass
`worker_init_fn=WindowDataset.worker_init_fn` to a DataLoader to do that reset explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from biohuman.errors import InputFormatError, SpecError

DEFAULT_VARIABLES: tuple[str, ...] = ("joint_angle", "translation", "activation")


def _open_nc(path: Path):  # noqa: ANN202 - netCDF4.Dataset
    import netCDF4

    try:
        nc = netCDF4.Dataset(str(path), "r")
    except OSError as exc:
        raise InputFormatError(f"cannot open as NetCDF: {exc}", path) from exc
    nc.set_auto_mask(False)  # float fill is NaN already; no masked arrays
    return nc


class WindowDataset(Dataset):
    """Fixed-length windows over trial NetCDF files.

    sources: a list of trial file paths, or a dataset folder / manifest.csv (trials selected by
        `status`, paths taken from the manifest).
    window: frames per window (> 0). stride: frames between window starts (default = window).
    variables: data variables to serve; each must have `time` as its first dim.
    Windows never cross a trial's end; trials shorter than `window` give no windows (listed in
    `self.short`).

    Item: {variable: float32 tensor (window, ...)} + "trial_index" (int64, index into
    `self.paths`) + "start" (int64, first frame). `self.windows` lists (trial_index, start).
    """

    def __init__(
        self,
        sources: Sequence[str | Path] | str | Path,
        window: int,
        stride: int | None = None,
        variables: Sequence[str] = DEFAULT_VARIABLES,
        *,
        status: str | Sequence[str] | None = ("ok", "flagged"),
    ) -> None:
        if window <= 0 or (stride is not None and stride <= 0):
            raise ValueError(f"window and stride must be positive (window={window}, stride={stride})")
        self.window = int(window)
        self.stride = int(stride) if stride is not None else self.window
        self.variables = tuple(variables)
        if isinstance(sources, (str, Path)):
            from biohuman.io.dataset import open_dataset

            self.paths = open_dataset(sources, status=status, validate=False).paths
        else:
            self.paths = [Path(p) for p in sources]
        self.trial_ids: list[str] = []
        self.n_frames: list[int] = []
        self.shapes: dict[str, list[tuple[int, ...]]] = {v: [] for v in self.variables}
        for path in self.paths:
            nc = _open_nc(path)
            try:
                if "time" not in nc.dimensions:
                    raise SpecError("no 'time' dimension", path)
                self.n_frames.append(len(nc.dimensions["time"]))
                self.trial_ids.append(str(getattr(nc, "trial_id", path.stem)))
                for v in self.variables:
                    if v not in nc.variables:
                        raise SpecError(f"no variable {v!r} to serve", path)
                    var = nc.variables[v]
                    if not var.dimensions or var.dimensions[0] != "time":
                        raise SpecError(f"variable {v!r} has dims {var.dimensions}; 'time' must be first", path)
                    self.shapes[v].append(tuple(var.shape[1:]))
            finally:
                nc.close()
        for v, shapes in self.shapes.items():
            if len(set(shapes)) > 1:
                raise SpecError(f"variable {v!r} has different per-frame shapes across trials: {sorted(set(shapes))}")
        self.short = [p for p, n in zip(self.paths, self.n_frames) if n < self.window]
        self.windows: list[tuple[int, int]] = [
            (i, s) for i, n in enumerate(self.n_frames) for s in range(0, n - self.window + 1, self.stride)]
        self._handles: dict[int, Any] = {}
        self._inherited: list[Any] = []
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.windows)

    def _handle(self, i: int):  # noqa: ANN202 - netCDF4.Dataset
        if self._pid != os.getpid():
            self.reset_handles()
        nc = self._handles.get(i)
        if nc is None:
            nc = self._handles[i] = _open_nc(self.paths[i])
        return nc

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        trial, start = self.windows[index]
        nc = self._handle(trial)
        out: dict[str, torch.Tensor] = {}
        for v in self.variables:
            values = np.asarray(nc.variables[v][start:start + self.window], dtype=np.float32)
            out[v] = torch.from_numpy(values)
        out["trial_index"] = torch.tensor(trial, dtype=torch.int64)
        out["start"] = torch.tensor(start, dtype=torch.int64)
        return out

    def reset_handles(self) -> None:
        """Forget open handles without touching them (call in a fresh process: a forked child must
        not use or close its parent's HDF5 handles); they are kept referenced so they are never
        finalised here."""
        self._inherited.extend(self._handles.values())
        self._handles = {}
        self._pid = os.getpid()

    def close(self) -> None:
        """Close this process's handles."""
        if self._pid == os.getpid():
            for nc in self._handles.values():
                nc.close()
        else:
            self._inherited.extend(self._handles.values())
        self._handles = {}

    @staticmethod
    def worker_init_fn(worker_id: int) -> None:  # noqa: ARG004 - DataLoader signature
        """DataLoader worker_init_fn: give each worker its own (lazily opened) file handles."""
        info = torch.utils.data.get_worker_info()
        if info is not None and isinstance(info.dataset, WindowDataset):
            info.dataset.reset_handles()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_inherited"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
