"""TRC reading and writing: hand-built files, bad inputs, round trips, OpenSim readability, and the
real files of ../shared/data/external."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biohuman.errors import InputFormatError, MarkerError, UnitsError
from biohuman.io.trc import MarkerData, read_trc, write_trc

NAMES = ["RASI", "LASI", "RKNE", "LKNE", "RANK"]


def make_markers(n: int = 100, rate: float = 100.0, seed: int = 0) -> MarkerData:
    """Smooth, body-sized trajectories (metres): a walker moving along x with some sway."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    base = rng.uniform([-0.2, 0.1, -0.3], [0.2, 1.2, 0.3], (len(NAMES), 3))
    freq = rng.uniform(0.5, 1.5, (len(NAMES), 3))
    xyz = base[None] + 0.05 * np.sin(2 * np.pi * freq[None] * t[:, None, None])
    xyz[:, :, 0] += 1.2 * t[:, None]
    return MarkerData(time=t, names=list(NAMES), xyz=xyz, rate=rate, source="test")


def trc_text(data: MarkerData, *, units: str | None = "mm", scale: float = 1000.0, n_frames: int | None = None,
             cells: dict[tuple[int, int], str] | None = None, header_lines: tuple[int, ...] = (0, 1, 2, 3, 4)) -> str:
    """A TRC file as text, built by hand (independently of write_trc). cells overrides data cells
    (row, column) with raw strings; header_lines picks which of the 5 header lines to include."""
    t, m = data.n_frames, len(data.names)
    keys = ["DataRate", "CameraRate", "NumFrames", "NumMarkers", "Units", "OrigDataRate", "OrigDataStartFrame",
            "OrigNumFrames"]
    vals = [f"{data.rate:g}", f"{data.rate:g}", str(n_frames or t), str(m), units or "", f"{data.rate:g}", "1",
            str(n_frames or t)]
    if units is None:
        del keys[4], vals[4]
    head = [
        "PathFileType\t4\t(X/Y/Z)\thand.trc",
        "\t".join(keys),
        "\t".join(vals),
        "Frame#\tTime\t" + "\t\t\t".join(data.names) + "\t\t",
        "\t\t" + "\t".join(f"{a}{i + 1}" for i in range(m) for a in "XYZ"),
    ]
    lines = [head[i] for i in header_lines] + [""]
    for i in range(t):
        row = [str(i + 1), f"{data.time[i]:.6f}"] + [
            "" if np.isnan(v) else f"{v * scale:.6f}" for v in data.xyz[i].ravel()]
        for (r, c), s in (cells or {}).items():
            if r == i:
                row[c] = s
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str, name: str = "m.trc") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------
# good input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("units", "scale"), [("mm", 1000.0), ("cm", 100.0), ("m", 1.0), ("millimeters", 1000.0)])
def test_read_hand_built_converts_units(tmp_path: Path, units: str, scale: float) -> None:
    data = make_markers()
    got = read_trc(write(tmp_path, trc_text(data, units=units, scale=scale)))
    assert got.names == NAMES and got.rate == data.rate and got.repairs == []
    np.testing.assert_allclose(got.time, data.time, atol=1e-6)
    np.testing.assert_allclose(got.xyz, data.xyz, atol=1e-6)


def test_units_argument_when_header_lacks_units(tmp_path: Path) -> None:
    data = make_markers()
    path = write(tmp_path, trc_text(data, units=None))
    with pytest.raises(UnitsError, match=r"m.trc: header Units key is missing"):
        read_trc(path)
    np.testing.assert_allclose(read_trc(path, units="mm").xyz, data.xyz, atol=1e-6)
    with pytest.raises(UnitsError, match="unknown"):
        read_trc(write(tmp_path, trc_text(data, units="furlongs")))


def test_marker_subset_window(tmp_path: Path) -> None:
    data = make_markers()
    np.testing.assert_array_equal(data.marker("RKNE"), data.xyz[:, 2])
    sub = data.subset(["RANK", "RASI"])
    assert sub.names == ["RANK", "RASI"]
    np.testing.assert_array_equal(sub.xyz[:, 0], data.xyz[:, 4])
    win = data.window(0.2, 0.5)
    assert win.time[0] == pytest.approx(0.2) and win.time[-1] == pytest.approx(0.5)
    np.testing.assert_array_equal(win.xyz, data.xyz[(data.time >= 0.2 - 1e-9) & (data.time <= 0.5 + 1e-9)])
    with pytest.raises(MarkerError, match="NOPE"):
        data.marker("NOPE")
    with pytest.raises(MarkerError, match="NOPE"):
        data.subset(["RASI", "NOPE"])


# ------------------------------------------------------------------------------------------------
# gaps
# ------------------------------------------------------------------------------------------------


def test_short_gap_is_interpolated_and_recorded(tmp_path: Path) -> None:
    data = make_markers()
    holed = MarkerData(data.time, data.names, data.xyz.copy(), data.rate)
    holed.xyz[40:43, 1] = np.nan  # 3 frames of LASI
    got = read_trc(write(tmp_path, trc_text(holed)))
    assert np.isfinite(got.xyz).all()
    # a smooth trajectory is recovered by cubic interpolation to well under a millimetre
    np.testing.assert_allclose(got.xyz[40:43, 1], data.xyz[40:43, 1], atol=1e-4)
    assert len(got.repairs) == 1
    note = got.repairs[0]
    assert note.startswith("LASI: interpolated") and "3 frames" in note and f"{data.time[40]:.2f} s" in note


def test_short_edge_gap_is_extrapolated(tmp_path: Path) -> None:
    data = make_markers()
    holed = MarkerData(data.time, data.names, data.xyz.copy(), data.rate)
    holed.xyz[:2, 0] = np.nan
    holed.xyz[-4:, 3] = np.nan
    got = read_trc(write(tmp_path, trc_text(holed)))
    assert np.isfinite(got.xyz).all()
    np.testing.assert_allclose(got.xyz[:2, 0], data.xyz[:2, 0], atol=5e-3)
    np.testing.assert_allclose(got.xyz[-4:, 3], data.xyz[-4:, 3], atol=5e-3)
    assert any(r.startswith("RASI: extrapolated") and "start" in r for r in got.repairs)
    assert any(r.startswith("LKNE: extrapolated") and "end" in r for r in got.repairs)


def test_long_gap_raises_naming_marker_length_and_time(tmp_path: Path) -> None:
    data = make_markers()
    data.xyz[30:50, 2] = np.nan  # 20 frames = 0.2 s at 100 Hz
    path = write(tmp_path, trc_text(data))
    with pytest.raises(MarkerError) as exc:
        read_trc(path, max_gap_s=0.1)
    msg = str(exc.value)
    assert str(path) in msg and "RKNE" in msg and "20 frames" in msg and f"at {data.time[30]:.3f} s" in msg
    got = read_trc(path, max_gap_s=0.25)  # allowed when the limit is raised
    assert np.isfinite(got.xyz).all()
    raw = read_trc(path, max_gap_s=None)  # or kept as NaN
    assert np.isnan(raw.xyz[30:50, 2]).all() and raw.repairs == []


def test_marker_missing_everywhere_and_required(tmp_path: Path) -> None:
    data = make_markers()
    data.xyz[:, 3] = np.nan
    path = write(tmp_path, trc_text(data))
    got = read_trc(path)
    assert np.isnan(got.xyz[:, 3]).all() and any(r.startswith("LKNE: missing in all frames") for r in got.repairs)
    with pytest.raises(MarkerError, match=r"required markers missing \(absent: C7, T10; no data: LKNE\)"):
        read_trc(path, required=["RASI", "C7", "LKNE", "T10"])
    read_trc(path, required=["RASI", "RANK"])


def test_unknown_marker_set(tmp_path: Path) -> None:
    path = write(tmp_path, trc_text(make_markers()))
    with pytest.raises(MarkerError, match=r"unknown marker set: only 2 of 5 .*RKNE"):
        read_trc(path, known=["RASI", "LASI", "C7", "T10"])
    read_trc(path, known=["RASI", "LASI", "RKNE", "C7"])  # 3 of 5 known: fine


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


def test_declared_metres_but_millimetres(tmp_path: Path) -> None:
    path = write(tmp_path, trc_text(make_markers(), units="m", scale=1000.0))
    with pytest.raises(UnitsError, match=r"m.trc: data magnitude contradicts units 'm'.*look like 'mm'"):
        read_trc(path)


def test_declared_millimetres_but_metres(tmp_path: Path) -> None:
    path = write(tmp_path, trc_text(make_markers(), units="mm", scale=1.0))
    with pytest.raises(UnitsError, match=r"contradicts units 'mm'.*look like 'm'"):
        read_trc(path)
    # an explicit (wrong-header-overriding) units argument fixes it and is recorded
    got = read_trc(path, units="m")
    assert got.repairs and "overridden" in got.repairs[0]


def test_truncated_fewer_rows(tmp_path: Path) -> None:
    data = make_markers()
    path = write(tmp_path, trc_text(data, n_frames=data.n_frames + 10))
    with pytest.raises(InputFormatError, match=f"truncated: header NumFrames={data.n_frames + 10} but only "
                                               f"{data.n_frames} data rows"):
        read_trc(path)


def test_truncated_row_cut_midway(tmp_path: Path) -> None:
    text = trc_text(make_markers())
    cut = text.rstrip("\n")
    cut = cut[: cut.rfind("\t", 0, len(cut) - 30)]  # the last row loses its final cells
    with pytest.raises(InputFormatError, match=r"truncated: last data row .*\(row cut mid-way\)"):
        read_trc(write(tmp_path, cut))


def test_non_numeric_cell_names_row_and_column(tmp_path: Path) -> None:
    data = make_markers()
    path = write(tmp_path, trc_text(data, cells={(7, 2 + 3 * 2 + 1): "12,5"}))
    # line = 5 header lines + blank line + 8th row
    with pytest.raises(InputFormatError, match=r"line 14, column 10 \(RKNE.Y\): non-numeric value '12,5'"):
        read_trc(path)


@pytest.mark.parametrize(("drop", "expected"), [
    ((1, 2, 3, 4), "line 1: expected the 'PathFileType'"),
    ((0, 3, 4), "line 2: expected the header keys line"),
    ((0, 1, 2, 4), "line 4: expected the marker-name line"),
    ((0, 1, 2, 3), "line 5: expected the axis-label line"),
])
def test_missing_header_lines(tmp_path: Path, drop: tuple[int, ...], expected: str) -> None:
    path = write(tmp_path, trc_text(make_markers(), header_lines=drop))
    with pytest.raises(InputFormatError, match=expected):
        read_trc(path)


def test_non_monotonic_time(tmp_path: Path) -> None:
    data = make_markers()
    path = write(tmp_path, trc_text(data, cells={(20, 1): f"{data.time[18]:.6f}"}))
    with pytest.raises(InputFormatError, match="time is not strictly increasing at line 27"):
        read_trc(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="does not exist"):
        read_trc(tmp_path / "nope.trc")


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("units", ["mm", "m"])
def test_write_read_round_trip_with_nan(tmp_path: Path, units: str) -> None:
    data = make_markers(rate=120.0)
    data.xyz[10:60, 1] = np.nan  # long gap, kept as NaN on write
    path = tmp_path / "rt.trc"
    write_trc(path, data, units=units)
    back = read_trc(path, max_gap_s=None)
    assert back.names == data.names and back.rate == pytest.approx(data.rate)
    np.testing.assert_allclose(back.time, data.time, rtol=1e-9)
    np.testing.assert_allclose(back.xyz, data.xyz, rtol=1e-9, atol=1e-12)
    assert np.isnan(back.xyz[10:60, 1]).all()
    assert [p.name for p in tmp_path.iterdir()] == ["rt.trc"]


def test_written_file_is_opensim_readable(tmp_path: Path) -> None:
    from biohuman.osim.model import opensim

    osim = opensim()
    data = make_markers()
    data.xyz[5:9, 2] = np.nan
    path = tmp_path / "os.trc"
    write_trc(path, data, units="mm")
    table = osim.TimeSeriesTableVec3(str(path))
    assert table.getNumRows() == data.n_frames
    assert list(table.getColumnLabels()) == data.names
    assert table.getTableMetaDataAsString("Units") == "mm"
    times = np.array(table.getIndependentColumn())
    np.testing.assert_allclose(times, data.time, atol=1e-9)
    for i in (0, 6, 50):
        row = table.getRowAtIndex(i)
        got = np.array([[row[j][k] for k in range(3)] for j in range(len(data.names))]) / 1000.0
        np.testing.assert_allclose(got, data.xyz[i], atol=1e-9, equal_nan=True)
    assert np.isnan([table.getRowAtIndex(6)[2][k] for k in range(3)]).all()


def test_write_rejects_bad_units_and_names(tmp_path: Path) -> None:
    data = make_markers()
    with pytest.raises(UnitsError):
        write_trc(tmp_path / "x.trc", data, units="inch")
    bad = MarkerData(data.time, ["R ASI", *data.names[1:]], data.xyz, data.rate)
    with pytest.raises(MarkerError, match="whitespace"):
        write_trc(tmp_path / "x.trc", bad)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# real files
# ------------------------------------------------------------------------------------------------


def _header(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    keys = [c.strip() for c in lines[1].split("\t") if c.strip()]
    vals = [c.strip() for c in lines[2].split("\t") if c.strip()]
    return dict(zip(keys, vals))


@pytest.mark.parametrize("rel", [
    "opensim-models/Pipelines/Rajagopal/ExpData/motion_capture_walk.trc",
    "opensim-models/Pipelines/Rajagopal/ExpData/static_run.trc",
    "opensim-models/Pipelines/Gait2392_Simbody/subject01_walk1.trc",
])
def test_real_trc_matches_header_and_opensim(external_dir: Path, rel: str) -> None:
    from biohuman.osim.model import opensim

    path = external_dir / rel
    head = _header(path)
    data = read_trc(path)
    assert data.xyz.shape == (int(head["NumFrames"]), int(head["NumMarkers"]), 3)
    assert data.rate == pytest.approx(float(head["DataRate"]))
    assert head["Units"] == "mm"
    # the same numbers OpenSim reads, converted from mm to metres
    table = opensim().TimeSeriesTableVec3(str(path))
    assert list(table.getColumnLabels()) == data.names
    mid = data.n_frames // 2
    row = table.getRowAtIndex(mid)
    ref = np.array([[row[j][k] for k in range(3)] for j in range(len(data.names))]) / 1000.0
    np.testing.assert_allclose(data.xyz[mid], ref, atol=1e-9)
    np.testing.assert_allclose(data.time, np.array(table.getIndependentColumn()), atol=1e-9)
    # a body in a lab: pelvis-height markers around a metre up (y), within a few metres of origin
    assert 0.5 < np.nanmedian(data.xyz[..., 1]) < 1.5


def test_real_c3d_conversion_with_long_gaps(external_dir: Path) -> None:
    path = external_dir / "opensim-core/OpenSim/Common/Test/std_walking2_markers.trc"
    head = _header(path)
    with pytest.raises(MarkerError, match="gap of"):
        read_trc(path)  # markers enter and leave the capture volume: long edge gaps
    data = read_trc(path, max_gap_s=None)
    assert data.xyz.shape == (int(head["NumFrames"]), int(head["NumMarkers"]), 3)
    assert np.isnan(data.xyz).any() and np.isfinite(data.xyz).any()
    # downsampled conversion: the header's DataRate contradicts the time column; the time wins
    assert data.rate == pytest.approx((data.n_frames - 1) / (data.time[-1] - data.time[0]))
    assert any("DataRate" in r for r in data.repairs)
