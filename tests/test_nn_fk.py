"""Differentiable torch forward kinematics against OpenSim: generic Rajagopal2015 at random poses,
and a non-uniformly scaled copy (OpenSim's own Model.scale) against the scaled model's joints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

TOL_M = 1e-3  # 1 mm (the requirement is < 1 cm)


def _random_pose(names: list[str], t: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = {c: rng.uniform(-0.7, 0.7, t) for c in names}
    for side in "rl":
        q[f"knee_angle_{side}"] = rng.uniform(0.0, 2.0, t)
    q.update(pelvis_tx=rng.normal(size=t), pelvis_ty=1 + rng.normal(size=t) * 0.1, pelvis_tz=rng.normal(size=t))
    return q


def _compare(fk, q: dict[str, np.ndarray], model_osim, scale=None) -> np.ndarray:
    from biohuman.dynamics.kinematics import joint_centers

    df = pd.DataFrame(q, index=np.arange(len(next(iter(q.values())))) * 0.01)
    ref = joint_centers(model_osim, df, fk.joints)
    with torch.no_grad():
        pred = fk({k: torch.tensor(v) for k, v in q.items()}, scale=scale).numpy()
    return np.stack([np.linalg.norm(pred[:, i] - ref[j], axis=-1) for i, j in enumerate(fk.joints)], 1)


def test_generic_model_matches_opensim() -> None:
    from biohuman.nn.fk import ForwardKinematics

    fk = ForwardKinematics()
    assert "knee_r" in fk.joints and "pelvis" in fk.joints and not any(j.startswith("patella") for j in fk.joints)
    free = [c for c in fk.rotational if c not in ("subtalar_angle_r", "subtalar_angle_l", "mtp_angle_r",
                                                  "mtp_angle_l", "wrist_flex_r", "wrist_dev_r", "wrist_flex_l",
                                                  "wrist_dev_l")]
    err = _compare(fk, _random_pose(free, 25, 0), None)
    assert err.max() < TOL_M, dict(zip(fk.joints, err.max(0)))


def test_scaled_model_matches_opensim(tmp_path: Path) -> None:
    """Non-uniform per-body factors: OpenSim scales the model; we scale the generic tree."""
    from biohuman.nn.fk import ForwardKinematics
    from biohuman.osim.model import load_model, opensim

    osim = opensim()
    model = load_model(None)
    state = model.initSystem()
    rng = np.random.default_rng(1)
    factors = {}
    scales = osim.ScaleSet()
    bodies = model.getBodySet()
    for i in range(bodies.getSize()):
        name = bodies.get(i).getName()
        f = rng.uniform(0.85, 1.2, 3)
        factors[name] = f
        s = osim.Scale()
        s.setSegmentName(name)
        s.setScaleFactors(osim.Vec3(*f))
        s.setApply(True)
        scales.cloneAndAppend(s)
    model.scale(state, scales, True, -1.0)
    path = tmp_path / "scaled.osim"
    model.printToXML(str(path))
    fk = ForwardKinematics()
    err = _compare(fk, _random_pose(["hip_flexion_r", "hip_adduction_l", "knee_angle_r", "ankle_angle_l",
                                     "lumbar_extension", "arm_flex_r", "elbow_flex_l", "pelvis_tilt"], 10, 2),
                   path, scale=fk.scale_from_factors(factors))
    assert err.max() < TOL_M, dict(zip(fk.joints, err.max(0)))


def test_pelvis_rotation_input_and_gradients() -> None:
    from biohuman.nn.fk import ForwardKinematics
    from biohuman.nn.model import pelvis_matrix

    fk = ForwardKinematics()
    q = {k: torch.tensor(v) for k, v in _random_pose(["pelvis_tilt", "pelvis_list", "pelvis_rotation",
                                                      "knee_angle_r", "hip_flexion_l"], 6, 3).items()}
    a = fk(q)
    r = pelvis_matrix(q["pelvis_tilt"], q["pelvis_list"], q["pelvis_rotation"])
    t = torch.stack([q["pelvis_tx"], q["pelvis_ty"], q["pelvis_tz"]], -1)
    b = fk({k: v for k, v in q.items() if not k.startswith("pelvis")}, pelvis_rotation=r, pelvis_translation=t)
    torch.testing.assert_close(a, b)
    knee = q["knee_angle_r"].clone().requires_grad_(True)
    out = fk({"knee_angle_r": knee}, scale=fk.scale_from_height(torch.full((6,), 1.8, dtype=torch.float64)))
    out[:, fk.joints.index("ankle_r")].sum().backward()
    assert torch.isfinite(knee.grad).all() and knee.grad.abs().min() > 0
    # height scaling scales the skeleton about the pelvis (its ground translation is not scaled)
    zero = {"knee_angle_r": torch.zeros(1, dtype=torch.float64)}
    tall = fk(zero, scale=fk.scale_from_height(torch.tensor([2 * 1.70], dtype=torch.float64)))
    ref = fk(zero)
    torch.testing.assert_close(tall - tall[:, :1], 2 * (ref - ref[:, :1]))


def assert_fk_reproduces_dataset(ds) -> float:  # noqa: ANN001 - xarray.Dataset
    """FK from a labelled trial's angles, translations and scale factors reproduces its
    joint_position to 1 cm; returns the largest error (m). tests/test_workflow.py calls it on
    the trial it labels (a real labelled trial, in CI too)."""
    from biohuman.nn.fk import ForwardKinematics

    assert "scale_factor" in ds, "trial has no scale_factor"
    fk = ForwardKinematics(joints=[str(j) for j in ds.joint.values])
    q = {str(c): torch.tensor(np.radians(ds.joint_angle.sel(coordinate=c).values.astype(np.float64)))
         for c in ds.coordinate.values}
    q.update({str(c): torch.tensor(ds.translation.sel(translational_coordinate=c).values.astype(np.float64))
              for c in ds.translational_coordinate.values})
    sf = {str(b): ds.scale_factor.sel(body=b).values for b in ds.body.values}
    with torch.no_grad():
        pred = fk(q, scale=fk.scale_from_factors(sf)).numpy()
    err = np.linalg.norm(pred - ds.joint_position.values, axis=-1)
    assert err.max() < 0.01, float(err.max())
    return float(err.max())
