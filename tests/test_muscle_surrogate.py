"""Muscle-geometry surrogate: spanned coordinates, held-out accuracy against OpenSim on poses it
was not fitted on, both moment-arm definitions, caching, extrapolation flags, torch = numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biohuman.dynamics.muscles import (
    MuscleSurrogate,
    coordinate_ranges,
    fit_muscle_surrogate,
    monomial_exponents,
    opensim_muscle_geometry,
)
from biohuman.errors import ConfigError, InputFormatError
from biohuman.osim.model import rajagopal_path

MUSCLES = ["recfem_r", "gaslat_r", "gasmed_r", "soleus_r", "glmax1_r", "bfsh_r"]
RANGES = {"hip_flexion_r": (-0.3, 0.9), "hip_adduction_r": (-0.25, 0.15), "hip_rotation_r": (-0.3, 0.3),
          "knee_angle_r": (0.0, 1.3), "ankle_angle_r": (-0.4, 0.35)}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[MuscleSurrogate, Path]:
    cache = tmp_path_factory.mktemp("surrogate_cache")
    sur = fit_muscle_surrogate(rajagopal_path(), RANGES, muscles=MUSCLES, n_samples=700, cache_dir=cache)
    return sur, cache


def test_monomials() -> None:
    e = monomial_exponents(2, 2)
    assert {tuple(r) for r in e} == {(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)}
    assert len(monomial_exponents(4, 5)) == 126


def test_spanned_coordinates(fitted: tuple[MuscleSurrogate, Path]) -> None:
    spans = fitted[0].spans
    assert set(spans["recfem_r"]) == {"hip_flexion_r", "hip_adduction_r", "hip_rotation_r", "knee_angle_r"}
    hip = {"hip_flexion_r", "hip_adduction_r", "hip_rotation_r"}
    for gas in ("gaslat_r", "gasmed_r"):  # the tree chain first, then OpenSim's off-chain moment arms
        assert set(fitted[0].fits[gas].coordinates) == {"knee_angle_r", "ankle_angle_r"}
        assert set(spans[gas][2:]) <= hip and spans[gas][2:] == fitted[0].fits[gas].off_chain
    assert "hip_flexion_r" in spans["gasmed_r"]  # up to 0.5 mm near knee extension
    assert set(spans["bfsh_r"]) == {"knee_angle_r"}
    assert not any(f.off_chain for m, f in fitted[0].fits.items() if not m.startswith("gas"))
    assert "gasmed_r" in fitted[0].off_chain and set(fitted[0].off_chain) <= {"gaslat_r", "gasmed_r"}
    assert "knee_angle_r_beta" not in fitted[0].coordinates  # coupled: folded into knee_angle_r


def test_held_out_poses_match_opensim(fitted: tuple[MuscleSurrogate, Path]) -> None:
    """Fresh random poses inside the box: lengths within 1 mm, computeMomentArm within 2 mm
    (held-out RMSE reported in metadata below 1 mm)."""
    sur, _ = fitted
    rng = np.random.default_rng(11)
    q = pd.DataFrame({c: rng.uniform(*RANGES[c], 40) for c in sur.coordinates})
    ref = opensim_muscle_geometry(rajagopal_path(), q, sur.muscles, sur.spans)
    out = sur.evaluate(sur.coordinate_matrix(q))
    assert np.abs(out["length"] - ref["length"]).max() < 1e-3
    for i, m in enumerate(sur.muscles):
        cols = [sur.coordinates.index(c) for c in sur.spans[m]]
        err = np.abs(out["moment_arm"][:, i, cols] - ref[f"moment_arm_{i}"])
        assert err.max() < 2e-3, (m, err.max())
    # off-chain moment arms (gasmed_r about the hip, 0.1-0.5 mm) are followed, not left at 0
    i, f = sur.muscles.index("gasmed_r"), sur.fits["gasmed_r"]
    off = [sur.coordinates.index(c) for c in f.off_chain]
    true = ref[f"moment_arm_{i}"][:, len(f.coordinates):]
    err = out["moment_arm"][:, i, off] - true
    assert np.sqrt(np.mean(true ** 2)) > 5e-5 and np.sqrt(np.mean(err ** 2)) < 0.1 * np.sqrt(np.mean(true ** 2))
    # they vanish once the knee flexes (the condyle wrap lets go); the fit must not ripple there,
    # since on a run's saturated frames 0.05 mm of ripple moved activations by up to 0.6
    flexed = q["knee_angle_r"].to_numpy() > 0.7
    assert flexed.sum() > 5 and np.abs(true[flexed]).max() < 1e-6 and np.abs(err[flexed]).max() < 5e-6
    meta = sur.metadata
    assert meta["moment_arm_definition"] == "opensim"
    assert meta["summary_mm"]["moment_arm_rmse_max"] < 1.0
    assert meta["timing_s"]["total"] < 120


def test_dldq_definition_is_minus_length_gradient(tmp_path: Path) -> None:
    sur = fit_muscle_surrogate(rajagopal_path(), RANGES, muscles=["bfsh_r", "gaslat_r"], moment_arms="dLdq",
                               n_samples=300, cache_dir=tmp_path)
    assert sur.metadata["moment_arm_definition"] == "dLdq"
    assert set(sur.spans["gaslat_r"]) == {"knee_angle_r", "ankle_angle_r"}  # -dL/dq off the chain is 0
    q = np.tile(0.5 * (sur.lower + sur.upper), (3, 1))
    h = 1e-6
    for k in range(len(sur.coordinates)):
        qp, qm = q.copy(), q.copy()
        qp[:, k] += h
        qm[:, k] -= h
        fd = -(sur.evaluate(qp)["length"] - sur.evaluate(qm)["length"]) / (2 * h)
        assert np.allclose(sur.evaluate(q)["moment_arm"][:, :, k], fd, atol=1e-7)


def test_torch_matches_numpy_and_speed(fitted: tuple[MuscleSurrogate, Path]) -> None:
    import torch

    sur, _ = fitted
    rng = np.random.default_rng(2)
    q = rng.uniform(sur.lower, sur.upper, (25, len(sur.coordinates)))
    qd = rng.normal(0, 2, q.shape)
    a = sur.evaluate(q, qd)
    b = sur.evaluate(torch.as_tensor(q), torch.as_tensor(qd))
    for key in ("length", "moment_arm", "dldq", "speed"):
        assert np.allclose(a[key], b[key].numpy(), atol=1e-12)
    assert np.allclose(a["speed"], -np.einsum("tmk,tk->tm", a["moment_arm"], qd))
    c = sur.evaluate(torch.as_tensor(q), torch.as_tensor(qd), dldq=False)  # the batched solver's fast path
    assert "dldq" not in c
    for key in ("length", "moment_arm", "speed"):
        assert np.allclose(a[key], c[key].numpy(), atol=1e-12)


def test_cache_and_roundtrip(fitted: tuple[MuscleSurrogate, Path], tmp_path: Path) -> None:
    sur, cache = fitted
    again = fit_muscle_surrogate(rajagopal_path(), RANGES, muscles=MUSCLES, n_samples=700, cache_dir=cache)
    assert again.metadata["cache"]["hit"] is True
    q = np.tile(sur.lower + 0.3 * (sur.upper - sur.lower), (2, 1))
    assert np.allclose(again.evaluate(q)["moment_arm"], sur.evaluate(q)["moment_arm"])
    path = sur.save(tmp_path / "s.npz")
    loaded = MuscleSurrogate.load(path)
    assert loaded.spans == sur.spans
    assert np.allclose(loaded.evaluate(q)["length"], sur.evaluate(q)["length"])
    assert np.array_equal(loaded.evaluate(q)["moment_arm"], sur.evaluate(q)["moment_arm"])  # off-chain arms too
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputFormatError):
        MuscleSurrogate.load(tmp_path / "bad.npz")


def test_extrapolation_flags(fitted: tuple[MuscleSurrogate, Path]) -> None:
    sur, _ = fitted
    q = pd.DataFrame({c: np.full(4, 0.5 * (lo + hi)) for c, lo, hi in zip(sur.coordinates, sur.lower, sur.upper)})
    q.loc[2, "knee_angle_r"] = sur.upper[sur.coordinates.index("knee_angle_r")] + 0.1
    flags = sur.outside_box(q)
    assert flags["any"].tolist() == [False, False, True, False]
    assert flags.loc[2, "knee_angle_r"] and not flags.loc[2, "hip_flexion_r"]


def test_coordinate_ranges_and_bad_settings() -> None:
    a = pd.DataFrame({"hip_flexion_r": [0.0, 0.5], "pelvis_tx": [0.0, 1.0]})
    b = pd.DataFrame({"hip_flexion_r": [-0.2, 0.1]})
    r = coordinate_ranges([a, b], margin_rad=0.1, margin_m=0.05)
    assert r["hip_flexion_r"] == pytest.approx((-0.3, 0.6))
    assert r["pelvis_tx"] == pytest.approx((-0.05, 1.05))
    with pytest.raises(ConfigError, match="moment_arms"):
        fit_muscle_surrogate(rajagopal_path(), RANGES, moment_arms="virtual_work")


def _gait_like(n: int, phase: float = 0.0) -> pd.DataFrame:
    """A narrow periodic path through RANGES (hip and knee swing together, ankle follows)."""
    t = np.linspace(0.0, 4 * np.pi, n) + phase
    return pd.DataFrame({"hip_flexion_r": 0.3 + 0.5 * np.sin(t), "hip_adduction_r": -0.05 + 0.1 * np.sin(2 * t),
                         "hip_rotation_r": 0.05 * np.cos(t), "knee_angle_r": 0.6 + 0.6 * np.sin(t - 1.0),
                         "ankle_angle_r": -0.02 + 0.3 * np.sin(t + 0.5)})


def test_visited_poses_tighten_the_fit_along_the_motion(tmp_path: Path) -> None:
    """Fitting also on (jittered) poses of the trials the surrogate serves lowers the moment-arm
    error on fresh poses of that motion, with the same uniform samples; the visited held-out
    error is reported, and the poses enter the cache key."""
    muscles = ["recfem_r", "gaslat_r", "glmax1_r"]
    kw = {"muscles": muscles, "n_samples": 300, "max_degree": 4, "cache_dir": tmp_path}
    plain = fit_muscle_surrogate(rajagopal_path(), RANGES, **kw)
    visited = fit_muscle_surrogate(rajagopal_path(), RANGES, poses=[_gait_like(200)], n_visited=300, **kw)
    assert "visited_moment_arm_rmse_max" in visited.metadata["summary_mm"]
    assert set(visited.metadata["errors_visited_mm"]) == set(muscles)
    assert visited.metadata["cache"]["path"] != plain.metadata["cache"]["path"]
    q = _gait_like(60, phase=0.37)  # the same motion, frames between the fitted ones
    errs = {}
    for name, sur in (("plain", plain), ("visited", visited)):
        ref = opensim_muscle_geometry(rajagopal_path(), q, sur.muscles, sur.spans)
        out = sur.evaluate(sur.coordinate_matrix(q))
        errs[name] = np.sqrt(np.mean([np.mean((out["moment_arm"][:, i, [sur.coordinates.index(c) for c in
                                                                          sur.spans[m]]] - ref[f"moment_arm_{i}"]) ** 2)
                                      for i, m in enumerate(sur.muscles)]))
    assert errs["visited"] < 0.85 * errs["plain"], errs  # measured 0.11 vs 0.15 mm
    with pytest.raises(ConfigError):
        fit_muscle_surrogate(rajagopal_path(), RANGES, poses=[_gait_like(10)], visited_weight=-1.0, **kw)


def test_hinge_basis_gradient_matches_finite_differences() -> None:
    """The hinge-augmented basis' gradient (chain rule through max(0, x_j - t)) equals central
    differences, in numpy and torch, away from the knot."""
    import torch

    from biohuman.dynamics.muscles import _hinge_basis, hinge_exponents

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(50, 3))
    hinges = np.array([[1.0, 0.3]])
    x = x[np.abs(x[:, 1] - 0.3) > 1e-3]
    exps = hinge_exponents(3, 3, 1)
    phi, dphi = _hinge_basis(x, exps, hinges, np, grad=True)
    h = 1e-6
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        fd = (_hinge_basis(x + e, exps, hinges, np)[0] - _hinge_basis(x - e, exps, hinges, np)[0]) / (2 * h)
        assert np.abs(fd - dphi[:, j]).max() < 1e-6, j
    phit, dphit = _hinge_basis(torch.as_tensor(x), exps, hinges, torch, grad=True)
    assert np.abs(phit.numpy() - phi).max() < 1e-12 and np.abs(dphit.numpy() - dphi).max() < 1e-12
    # the hinge columns are zero below the knot and nonzero above it
    hcols = exps[:, 3] > 0
    assert np.all(phi[x[:, 1] < 0.3][:, hcols] == 0) and np.any(phi[x[:, 1] > 0.3][:, hcols] != 0)


def test_hinges_follow_the_quadriceps_kink(tmp_path: Path) -> None:
    """Over a deep-squat knee range the vasti's and rectus femoris' computeMomentArm has a kink
    (the quadriceps path starts to wrap); a hinge term in the knee angle is found and lowers the
    held-out error; the hinged surrogate survives a save/load round trip."""
    ranges = {"hip_flexion_r": (-0.2, 1.8), "hip_adduction_r": (-0.2, 0.2), "hip_rotation_r": (-0.2, 0.2),
              "knee_angle_r": (0.0, 2.1)}
    kw = {"muscles": ["vasint_r", "recfem_r"], "n_samples": 900, "cache_dir": tmp_path}
    plain = fit_muscle_surrogate(rajagopal_path(), ranges, hinges=False, **kw)
    hinged = fit_muscle_surrogate(rajagopal_path(), ranges, hinges=True, **kw)
    for m in kw["muscles"]:
        e = hinged.metadata["errors_mm"][m]
        assert e["hinge"]["coordinate"] == "knee_angle_r", e
        assert e["moment_arm_rmse"] < 0.8 * plain.metadata["errors_mm"][m]["moment_arm_rmse"], m
    again = MuscleSurrogate.load(hinged.metadata["cache"]["path"])
    q = np.random.default_rng(4).uniform([r[0] for r in ranges.values()], [r[1] for r in ranges.values()], (30, 4))
    q = q[:, [list(ranges).index(c) for c in hinged.coordinates]]
    a, b = hinged.evaluate(q), again.evaluate(q)
    assert np.abs(a["moment_arm"] - b["moment_arm"]).max() < 1e-12
