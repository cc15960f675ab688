"""OpenSim .mot/.sto reading and writing: round trips, OpenSim readability, bad inputs, real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biohuman.errors import InputFormatError
from biohuman.io.storage import read_storage, write_storage


def make_table(n: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.01 + 0.37
    values = rng.normal(0, 1, (n, 4)) * np.array([1e-3, 1.0, 1e2, 1e5])
    return pd.DataFrame(values, index=pd.Index(t, name="time"),
                        columns=["hip_flexion_r", "pelvis_tx", "knee_angle_r_moment", "ground_force_vy"])


def sto_text(labels: list[str], rows: list[list[str]], header: list[str] | None = None) -> str:
    head = header if header is not None else ["test", "version=1", f"nRows={len(rows)}",
                                              f"nColumns={len(labels)}", "inDegrees=yes", "endheader"]
    return "\n".join([*head, "\t".join(labels), *("\t".join(r) for r in rows)]) + "\n"


def write(tmp_path: Path, text: str, name: str = "t.sto") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_round_trip(tmp_path: Path) -> None:
    df = make_table()
    path = tmp_path / "rt.mot"
    write_storage(path, df, in_degrees=True, name="coords")
    st = read_storage(path)
    assert st.in_degrees and st.name == "coords"
    assert st.header["nRows"] == str(len(df)) and st.header["nColumns"] == str(df.shape[1] + 1)
    assert list(st.table.columns) == list(df.columns) and st.table.index.name == "time"
    np.testing.assert_allclose(st.table.index.to_numpy(), df.index.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(st.table.to_numpy(), df.to_numpy(), rtol=1e-7)
    assert [p.name for p in tmp_path.iterdir()] == ["rt.mot"]


def test_time_column_accepted_and_in_degrees_no(tmp_path: Path) -> None:
    df = make_table().reset_index()
    write_storage(tmp_path / "a.sto", df, in_degrees=False)
    st = read_storage(tmp_path / "a.sto")
    assert not st.in_degrees and "time" not in st.table.columns
    np.testing.assert_allclose(st.table.index.to_numpy(), df["time"].to_numpy())


def test_opensim_reads_written_file(tmp_path: Path) -> None:
    from biohuman.osim.model import opensim

    osim = opensim()
    df = make_table()
    path = tmp_path / "os.sto"
    write_storage(path, df, in_degrees=False)
    table = osim.TimeSeriesTable(str(path))
    assert table.getNumRows() == len(df) and list(table.getColumnLabels()) == list(df.columns)
    assert table.getTableMetaDataAsString("inDegrees") == "no"
    np.testing.assert_allclose(np.array(table.getIndependentColumn()), df.index.to_numpy(), rtol=1e-9)
    col = table.getDependentColumn("knee_angle_r_moment").to_numpy()
    np.testing.assert_allclose(col, df["knee_angle_r_moment"].to_numpy(), rtol=1e-7)
    # the legacy Storage class (used by the IK/ID/SO tools) reads every row too
    assert osim.Storage(str(path)).getSize() == len(df)


def test_nan_refused_unless_allowed(tmp_path: Path) -> None:
    from biohuman.osim.model import opensim

    df = make_table()
    df.iloc[7, 2] = np.nan
    with pytest.raises(InputFormatError, match="NaN at time .* 'knee_angle_r_moment'"):
        write_storage(tmp_path / "n.sto", df, in_degrees=False)
    assert list(tmp_path.iterdir()) == []
    write_storage(tmp_path / "n.sto", df, in_degrees=False, allow_nan=True)
    assert np.isnan(read_storage(tmp_path / "n.sto").table.iloc[7, 2])
    table = opensim().TimeSeriesTable(str(tmp_path / "n.sto"))
    assert np.isnan(table.getDependentColumn("knee_angle_r_moment").to_numpy()[7])


def test_write_rejects_whitespace_labels(tmp_path: Path) -> None:
    df = make_table().rename(columns={"pelvis_tx": "pelvis tx"})
    with pytest.raises(InputFormatError, match="whitespace"):
        write_storage(tmp_path / "w.sto", df, in_degrees=False)


def test_space_separated_values_and_free_text_header(tmp_path: Path) -> None:
    text = "name\nversion=1\nnRows=2\nnColumns=3\ninDegrees=no\nSome free text.\nendheader\n" \
           "time\ta\tb\n   0.0   1.5  2.5\n   0.1   3.5  4.5\n"
    st = read_storage(write(tmp_path, text))
    assert st.header["comment"] == "Some free text."
    np.testing.assert_array_equal(st.table.to_numpy(), [[1.5, 2.5], [3.5, 4.5]])


def test_wrong_ncolumns_header_trusts_data(tmp_path: Path) -> None:
    rows = [["0", "1", "2"], ["0.1", "3", "4"]]
    text = sto_text(["time", "a", "b"], rows, ["x", "nRows=2", "nColumns=40", "inDegrees=no", "endheader"])
    st = read_storage(write(tmp_path, text))
    assert list(st.table.columns) == ["a", "b"] and st.table.shape == (2, 2)


def test_no_endheader(tmp_path: Path) -> None:
    path = write(tmp_path, "name\nversion=1\ntime\ta\n0\t1\n")
    with pytest.raises(InputFormatError, match=r"t.sto: no 'endheader' line"):
        read_storage(path)


def test_truncated_rows(tmp_path: Path) -> None:
    rows = [["0", "1", "2"], ["0.1", "3", "4"], ["0.2", "5", "6"]]
    path = write(tmp_path, sto_text(["time", "a", "b"], rows[:2] + [["0.2", "5"]]))
    with pytest.raises(InputFormatError, match=r"truncated: last row \(line 10\) has 2 of 3 values"):
        read_storage(path)
    header = ["x", "nRows=5", "nColumns=3", "endheader"]
    path = write(tmp_path, sto_text(["time", "a", "b"], rows, header))
    with pytest.raises(InputFormatError, match="truncated: header nRows=5 but only 3 data rows"):
        read_storage(path)
    path = write(tmp_path, sto_text(["time", "a", "b"], [rows[0], ["0.1", "3"], rows[2]]))
    with pytest.raises(InputFormatError, match="line 9: 2 values for 3 column labels"):
        read_storage(path)


def test_non_numeric(tmp_path: Path) -> None:
    rows = [["0", "1", "2"], ["0.1", "3", "abc"]]
    path = write(tmp_path, sto_text(["time", "a", "b"], rows))
    with pytest.raises(InputFormatError, match=r"line 9, column 3 \(b\): non-numeric value 'abc'"):
        read_storage(path)


def test_first_column_not_time_and_decreasing_time(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="expected 'time'"):
        read_storage(write(tmp_path, sto_text(["frame", "a"], [["0", "1"]])))
    with pytest.raises(InputFormatError, match="time decreases at line 9"):
        read_storage(write(tmp_path, sto_text(["time", "a"], [["0.1", "1"], ["0.0", "2"]])))


# ------------------------------------------------------------------------------------------------
# real files
# ------------------------------------------------------------------------------------------------


def _header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() == "endheader":
            break
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


@pytest.mark.parametrize(("rel", "first_label"), [
    ("opensim-core/OpenSim/Examples/Moco/example3DWalking/id_walk.sto", "pelvis_tilt_moment"),
    ("opensim-core/OpenSim/Examples/Moco/example3DWalking/coordinates.sto",
     "/jointset/ground_pelvis/pelvis_tilt/value"),
    ("opensim-core/OpenSim/Examples/Moco/example3DWalking/grf_walk.mot", "ground_force_r_vx"),
    ("opensim-models/Tutorials/Estimating_Joint_Reaction_Loads/OutputReference/ResultsStaticOptimization/"
     "subject01_StaticOptimization_activation.sto", "glut_med1_r"),
    ("opensim-models_391677a/Pipelines/Rajagopal/outputReference/Results_CMC/cmc_states.sto", "pelvis_tilt"),
])
def test_real_storage_files(external_dir: Path, rel: str, first_label: str) -> None:
    from biohuman.osim.model import opensim

    path = external_dir / rel
    head = _header(path)
    st = read_storage(path)
    assert st.table.shape[0] == int(head["nRows"])
    assert st.table.columns[0] == first_label
    assert st.in_degrees == (head.get("inDegrees") == "yes")
    # same numbers as OpenSim's own reader
    table = opensim().TimeSeriesTable(str(path))
    labels = list(table.getColumnLabels())
    assert labels == list(st.table.columns)
    np.testing.assert_allclose(np.array(table.getIndependentColumn()), st.table.index.to_numpy(), rtol=1e-12)
    last = labels[-1]
    np.testing.assert_allclose(table.getDependentColumn(last).to_numpy(), st.table[last].to_numpy(), rtol=1e-12)
