"""WindowDataset: lazy windows over trial files, served through a multi-worker DataLoader."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import biohuman.io as bio  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_io_dataset import synthetic_trial  # noqa: E402


@pytest.fixture()
def trials(tmp_path: Path) -> list[Path]:
    lengths = [150, 97, 40, 203]
    paths = []
    for i, n in enumerate(lengths):
        ds = synthetic_trial(n=n, seed=10 + i, trial_id=f"T{i}", subject_id=f"S{i % 2}")
        paths.append(bio.save_trial(ds, tmp_path / f"T{i}.nc"))
    return paths


def test_import_biohuman_io_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, biohuman.io as bio; bio.read_trc; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_windows_cover_trials(trials: list[Path]) -> None:
    window, stride = 48, 20
    ds = bio.WindowDataset(trials, window=window, stride=stride)
    lengths = [bio.open_trial(p).sizes["time"] for p in trials]
    expected = [(i, s) for i, n in enumerate(lengths) for s in range(0, n - window + 1, stride)]
    assert ds.windows == expected and len(ds) == len(expected)
    assert ds.short == [p for p, n in zip(trials, lengths) if n < window]
    for i, n in enumerate(lengths):
        starts = [s for t, s in ds.windows if t == i]
        if n >= window:  # the windows reach to within one stride of the trial's end, never past it
            assert starts[0] == 0 and starts[-1] + window <= n < starts[-1] + window + stride
    assert ds.trial_ids == ["T0", "T1", "T2", "T3"]


def test_item_values_equal_slices(trials: list[Path]) -> None:
    ds = bio.WindowDataset(trials, window=32, stride=32,
                           variables=("joint_angle", "activation", "marker_position", "foot_contact"))
    for k in (0, len(ds) // 2, len(ds) - 1):
        item = ds[k]
        trial, start = ds.windows[k]
        ref = bio.open_trial(trials[trial])
        assert int(item["trial_index"]) == trial and int(item["start"]) == start
        for v in ("joint_angle", "activation", "marker_position", "foot_contact"):
            assert item[v].dtype == torch.float32
            want = ref[v].isel(time=slice(start, start + 32)).values.astype(np.float32)
            assert tuple(item[v].shape) == want.shape
            np.testing.assert_array_equal(item[v].numpy(), want)
    ds.close()


def test_dataloader_two_workers(trials: list[Path]) -> None:
    window, stride = 40, 25
    ds = bio.WindowDataset(trials, window=window, stride=stride)
    ds[0]  # a handle opened in the parent must not leak into the workers
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, num_workers=2,
                                         worker_init_fn=bio.WindowDataset.worker_init_fn)
    refs = [bio.open_trial(p) for p in trials]
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    for batch in batches:
        assert batch["activation"].shape[1:] == (window, refs[0].sizes["muscle"])
        for b in range(batch["start"].shape[0]):
            trial, start = int(batch["trial_index"][b]), int(batch["start"][b])
            seen.append((trial, start))
            for v in ds.variables:
                want = refs[trial][v].isel(time=slice(start, start + window)).values.astype(np.float32)
                np.testing.assert_array_equal(batch[v][b].numpy(), want)
    assert seen == ds.windows
    ds.close()


def test_from_manifest_with_status_filter(trials: list[Path], tmp_path: Path) -> None:
    records = []
    for i, p in enumerate(trials):
        rec = bio.manifest_record(bio.open_trial(p), p)
        rec["status"] = "flagged" if i == 1 else "ok"
        records.append(rec)
    bio.write_manifest(records, tmp_path / "manifest.csv")
    ok_only = bio.WindowDataset(tmp_path, window=30, status="ok")
    assert [p.name for p in ok_only.paths] == [p.name for i, p in enumerate(trials) if i != 1]
    both = bio.WindowDataset(tmp_path / "manifest.csv", window=30)
    assert len(both.paths) == len(trials)


def test_bad_inputs(trials: list[Path]) -> None:
    from biohuman.errors import SpecError

    with pytest.raises(SpecError, match="no variable 'nope'"):
        bio.WindowDataset(trials, window=10, variables=("nope",))
    with pytest.raises(SpecError, match="'time' must be first"):
        bio.WindowDataset(trials, window=10, variables=("qc_value",))
    with pytest.raises(ValueError, match="positive"):
        bio.WindowDataset(trials, window=0)
