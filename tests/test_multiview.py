"""`biohuman multiview` on the four calibrated pose2sim views.

The camera model is checked on its own (a synthetic point projected into every camera and
triangulated back; MediaPipe landmarks of the real views triangulated and reprojected, against the
same with a wrong convention), then the whole comparison runs with a small model that this file
trains in a few seconds: a randomly initialised BioHumanNet is not usable here, because its
outputs vary over time mostly through the sinusoidal position encoding (the same in every view and
untouched by shuffling frames), so a shuffled-frame control agrees as well as the real views do
(measured with random weights of the default size: activation PCC 0.966 between real views, 0.964
with shuffled frames). The small model is trained on MediaPipe-shaped landmarks of the library's
motions (`biohuman.motion.library`, with random perturbations and headings) projected into random
cameras, with activations a fixed function of the joint angles, so its outputs follow the pose in
each frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


def _pose2sim(external_dir: Path) -> Path:
    """The pose2sim demo folder (skips without it, fails instead under BIOHUMAN_REQUIRE_EXTERNAL=1)."""
    from biohuman.validation.multiview import DEMO

    pytest.importorskip("mediapipe", reason="mediapipe not installed (pip install mediapipe==0.10.21)")
    d = external_dir / DEMO
    if not (d / "calibration" / "Calib.qca.txt").is_file():
        from conftest import REQUIRE_EXTERNAL

        if REQUIRE_EXTERNAL:
            pytest.fail(f"BIOHUMAN_REQUIRE_EXTERNAL=1 but the pose2sim demo is missing: {d}")
        pytest.skip(f"pose2sim demo not found at {d}")
    return d


# ------------------------------------------------------------------------------------------------
# A small model trained on projected synthetic skeletons
# ------------------------------------------------------------------------------------------------

_FACE = {0: (0.10, 0.02, 0.0), 1: (0.09, 0.05, -0.02), 2: (0.08, 0.05, -0.03), 3: (0.08, 0.05, -0.045),
         4: (0.09, 0.05, 0.02), 5: (0.08, 0.05, 0.03), 6: (0.08, 0.05, 0.045), 7: (0.0, 0.03, -0.07),
         8: (0.0, 0.03, 0.07), 9: (0.09, -0.03, -0.02), 10: (0.09, -0.03, 0.02)}
"""MediaPipe face landmarks as (forward, up, right) m offsets from the head centre (pelvis axes)."""


def _landmarks33(J: np.ndarray, names: list[str], pelvis_R: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """33 MediaPipe-like 3D points (T, 33, 3) from joint centres J (T, J, 3), in the frame of J;
    pelvis_R (T, 3, 3): pelvis orientation in that frame (columns: anterior, up, right)."""
    from biohuman.nn.predict import MEDIAPIPE_OF_JOINT

    g = {n: J[:, i] for i, n in enumerate(names)}
    fwd, up, right = pelvis_R[..., 0], pelvis_R[..., 1], pelvis_R[..., 2]
    P = np.zeros((len(J), 33, 3))
    for j, k in MEDIAPIPE_OF_JOINT.items():
        P[:, k] = g[j]
    widen = rng.uniform(1.0, 1.6)  # MediaPipe's hips lie wider than the hip joint centres
    mid = 0.5 * (g["hip_l"] + g["hip_r"])
    P[:, 23], P[:, 24] = mid + widen * (g["hip_l"] - mid), mid + widen * (g["hip_r"] - mid)
    neck = 0.5 * (g["shoulder_l"] + g["shoulder_r"])
    trunk = neck - g["lumbar"]
    trunk /= np.linalg.norm(trunk, axis=-1, keepdims=True)
    head = neck + 0.2 * trunk
    for k, (a, b, c) in _FACE.items():
        P[:, k] = head + a * fwd + b * up + c * right
    for side, (w, e, pinky, index, thumb) in {"l": (15, 13, 17, 19, 21), "r": (16, 14, 18, 20, 22)}.items():
        d = P[:, w] - P[:, e]
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        P[:, pinky], P[:, index], P[:, thumb] = P[:, w] + 0.08 * d, P[:, w] + 0.09 * d, P[:, w] + 0.05 * d
    for side, (heel, toe) in {"l": (29, 31), "r": (30, 32)}.items():
        P[:, heel] = g[f"ankle_{side}"] - 0.05 * fwd - 0.04 * up
        P[:, toe] = g[f"mtp_{side}"]
    return P


def _camera(rng: np.random.Generator, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int]]:
    """A random camera looking at `target` (ground frame, y up): R, t (OpenCV axes), f px, (W, H)."""
    yaw, dist = rng.uniform(0, 2 * np.pi), rng.uniform(2.8, 4.5)
    C = target + np.array([dist * np.cos(yaw), rng.uniform(0.3, 1.3), dist * np.sin(yaw)])
    z = target + rng.normal(0, 0.3, 3) * [1, 1.5, 1] - C
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    size = (1080, 1920) if rng.uniform() < 0.7 else (1920, 1080)
    return R, -R @ C, rng.uniform(1300, 2000), size


def synthetic_sequences(n_variants: int = 6, seed: int = 0, height_m: float = 1.70) -> list[dict[str, np.ndarray]]:
    """Front-end arrays (`landmarks`, `world`, `detected`, `image_size`) and camera-frame labels
    (`y_coords`, `y_rot6d`, `y_joints`, `y_activation`) of the library's motions, each in
    `n_variants` versions (random perturbations of every coordinate, random heading, a random
    camera), at 30 fps."""
    from biohuman.motion.library import build_plan
    from biohuman.nn.fk import ForwardKinematics
    from biohuman.nn.model import pelvis_matrix
    from biohuman.osim.model import model_info

    info = model_info(None)
    coords = [c for c in info.rotational if not c.startswith("pelvis") and c not in info.coupled]
    fk = ForwardKinematics()
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(1234).normal(size=(len(coords), len(info.muscles))) / np.sqrt(len(coords))
    seqs = []
    for motion in ("walk", "run", "squat", "sit_to_stand", "cmj", "lunge", "arm_raise", "walk_slow"):
        plan = build_plan(motion, height_m, 30.0)
        T = len(plan.time)
        t = np.arange(T) / 30.0
        for _ in range(n_variants):
            def wobble(amp: float) -> np.ndarray:
                f, ph = rng.uniform(0.2, 1.2, 2), rng.uniform(0, 2 * np.pi, 2)
                wave = np.sin(2 * np.pi * f[0] * t + ph[0]) + 0.5 * np.sin(2 * np.pi * f[1] * t + ph[1])
                return amp * (rng.uniform(-1, 1) + wave) / 2
            q = {}
            for c in coords:
                base = plan.q_ref.get(c, np.zeros(T))
                amp = 0.7 if c.startswith(("arm_", "elbow")) else 0.3 if c.startswith(("lumbar", "hip")) else 0.2
                q[c] = base + wobble(amp)
            for c in ("elbow_flex_r", "elbow_flex_l", "knee_angle_r", "knee_angle_l"):
                q[c] = np.abs(q[c])
            tilt = plan.q_ref.get("pelvis_tilt", np.zeros(T)) + wobble(0.3)
            lst = plan.q_ref.get("pelvis_list", np.zeros(T)) + wobble(0.2)
            rot = plan.q_ref.get("pelvis_rotation", np.zeros(T)) + rng.uniform(0, 2 * np.pi) + wobble(0.3)
            Rp = pelvis_matrix(*(torch.as_tensor(a, dtype=torch.float64) for a in (tilt, lst, rot))).numpy()
            tr = np.stack([plan.q_ref.get(k, np.zeros(T)) for k in ("pelvis_tx", "pelvis_ty", "pelvis_tz")], -1)
            tr[:, 1] = np.where(tr[:, 1] == 0, 0.94, tr[:, 1])
            with torch.no_grad():
                J = fk({c: torch.as_tensor(v, dtype=torch.float64) for c, v in q.items()},
                       scale=fk.scale_from_height(torch.full((T,), height_m, dtype=torch.float64)),
                       pelvis_rotation=torch.as_tensor(Rp), pelvis_translation=torch.as_tensor(tr)).numpy()
            R, tc, f, (w, h) = _camera(rng, J[0, fk.joints.index("pelvis")])
            Jc = J @ R.T + tc
            Rc = R @ Rp
            P = _landmarks33(Jc, fk.joints, Rc, rng)
            mid = 0.5 * (P[:, 23] + P[:, 24])
            u = f * P[..., 0] / P[..., 2] + w / 2
            v = f * P[..., 1] / P[..., 2] + h / 2
            # MediaPipe's relative depth is in image-width units and, on the pose2sim views, about 3x
            # the geometric value
            z = 3 * f * (P[..., 2] - mid[:, None, 2]) / mid[:, None, 2] / w + rng.normal(0, 0.05, P.shape[:2])
            lm = np.stack([u / w, v / h, z, rng.uniform(0.5, 1.0, u.shape)], -1)  # visibility varies
            lm[..., :2] += rng.normal(0, 0.004, lm[..., :2].shape)
            world = P - mid[:, None] + rng.normal(0, 0.015, P.shape)
            x = np.stack([q[c] for c in coords], -1)
            seqs.append({"landmarks": lm.astype(np.float32), "world": world.astype(np.float32),
                         "detected": np.ones(T, bool), "image_size": np.array([w, h], np.float32),
                         "y_coords": x.astype(np.float32),
                         "y_rot6d": np.concatenate([Rc[..., :, 0], Rc[..., :, 1]], -1).astype(np.float32),
                         "y_joints": (Jc - Jc[:, :1]).astype(np.float32),
                         "y_activation": (1 / (1 + np.exp(-2.0 * x @ W))).astype(np.float32)})
    return seqs


def tiny_trained_checkpoint(path: Path, *, steps: int = 400, window: int = 32, seed: int = 0) -> Path:
    """A BioHumanNet (front-end `mediapipe`, d_model 32, one layer) trained for `steps` Adam steps
    (one torch thread) on `synthetic_sequences`: squared errors of the coordinates, the camera-frame
    pelvis orientation (6D) and the activations (the joints follow from these by the model's
    forward kinematics, which the loop skips for speed). Saved in the checkpoint contract (norm
    from the training inputs, train_cfg pose_frame camera)."""
    from biohuman.nn.fk import ForwardKinematics
    from biohuman.nn.frontend import torch_threads
    from biohuman.nn.model import BioHumanNet, input_norm_stats
    from biohuman.osim.model import model_info

    with torch_threads(1):
        torch.manual_seed(seed)
        info = model_info(None)
        coords = [c for c in info.rotational if not c.startswith("pelvis") and c not in info.coupled]
        cfg = {"coordinates": coords, "muscles": list(info.muscles), "joints": ForwardKinematics().joints,
               "frontend": "mediapipe", "d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0, "window": window}
        model = BioHumanNet(cfg)
        seqs = synthetic_sequences(seed=seed)
        norm = input_norm_stats(seqs, "mediapipe")
        model.set_norm(norm)
        rng = np.random.default_rng(seed)
        starts = [(i, s) for i, q in enumerate(seqs) for s in range(0, max(1, len(q["detected"]) - window + 1), 4)]
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        keys = ("landmarks", "world", "detected", "y_coords", "y_rot6d", "y_activation")
        C = len(coords)
        for step in range(steps):
            pick = [starts[k] for k in rng.integers(0, len(starts), 16)]
            n = min(window, *(len(seqs[i]["detected"]) - s for i, s in pick))
            b = {k: torch.as_tensor(np.stack([seqs[i][k][s:s + n] for i, s in pick])) for k in keys}
            b["image_size"] = torch.as_tensor(np.stack([seqs[i]["image_size"] for i, _ in pick]))
            b["mask"] = torch.ones(len(pick), n, dtype=torch.bool)
            b["height_m"] = torch.full((len(pick),), 1.70)
            b["landmarks"] = b["landmarks"] + torch.randn_like(b["landmarks"]) * torch.tensor([0.004, 0.004, 0.05, 0.0])
            b["world"] = b["world"] + 0.02 * torch.randn_like(b["world"])
            state = model.encode(b)
            p = model.pose_head(state)
            rot6d = p[..., C:C + 6] + torch.tensor([1.0, 0, 0, 0, 1.0, 0])
            act = torch.sigmoid(model.act_head(state))
            loss = (((p[..., :C] - b["y_coords"]) ** 2).mean() + ((rot6d - b["y_rot6d"]) ** 2).mean()
                    + 10 * ((act - b["y_activation"]) ** 2).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            for g in opt.param_groups:
                g["lr"] = 3e-3 * 0.5 * (1 + np.cos(np.pi * (step + 1) / steps))
        model.eval()
    torch.save({"model_state": model.state_dict(), "model_cfg": cfg, "norm": {k: tuple(v) for k, v in norm.items()},
                "train_cfg": {"pose_frame": "camera", "window": window}, "epoch": steps, "optimizer_state": None,
                "metrics": {"final_loss": float(loss.detach())}}, path)
    return path


# ------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------


def test_camera_round_trip_synthetic(tmp_path) -> None:  # noqa: ANN001
    """A .qca written from known cameras reads back to them; a world point projected into every
    camera (with distortion) triangulates back to itself, and weights drop a corrupted view."""
    from biohuman.validation.multiview import read_qca, reprojection_errors, triangulate

    rng = np.random.default_rng(0)
    xml = ['<calibration><cameras>']
    truth = []
    for i in range(3):
        yaw = 2 * np.pi * i / 3
        pos = np.array([3 * np.cos(yaw), 3 * np.sin(yaw), 1.5])  # z up, like a Qualisys lab
        look = -pos + np.array([0, 0, 1.0])
        look /= np.linalg.norm(look)
        # Qualisys camera axes (rows): x right, y up in the image, z backwards (looks along -z)
        xq = np.cross(look, [0, 0, 1.0])
        xq /= np.linalg.norm(xq)
        zq = -look
        yq = np.cross(zq, xq)
        rq = np.stack([xq, yq, zq])
        f, cu, cv = 1500 + 50 * i, 530.25 + i, 955.5 - i
        r = " ".join(f'r{a + 1}{b + 1}="{rq[a, b]!r}"' for a in range(3) for b in range(3))
        xml.append(f'<camera serial="c{i}" viewrotation="0"><fov_video left="0" top="0" right="1087" bottom="1919"/>'
                   f'<transform x="{pos[0] * 1000!r}" y="{pos[1] * 1000!r}" z="{pos[2] * 1000!r}" {r}/>'
                   f'<intrinsic focalLengthU="{f * 64}" focalLengthV="{f * 64}" centerPointU="{cu * 64}" '
                   f'centerPointV="{cv * 64}" radialDistortion1="-0.05" radialDistortion2="0.14" radialDistortion3="0" '
                   f'tangentalDistortion1="0.0006" tangentalDistortion2="0.0007"/></camera>')
        truth.append((pos, look, f, cu, cv))
    xml.append("</cameras></calibration>")
    (tmp_path / "c.qca.txt").write_text("".join(xml))
    cams = list(read_qca(tmp_path / "c.qca.txt").values())
    assert [c.name for c in cams] == ["c0", "c1", "c2"] and cams[0].size == (1088, 1920)
    for c, (pos, look, f, cu, cv) in zip(cams, truth):
        np.testing.assert_allclose(c.position, pos, atol=1e-9)
        np.testing.assert_allclose(c.R[2], look, atol=1e-9)          # OpenCV z = viewing direction
        np.testing.assert_allclose(c.K[[0, 1, 0, 1], [0, 1, 2, 2]], [f, f, cu, cv], atol=1e-9)
        np.testing.assert_allclose(c.R @ c.R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(c.R) == pytest.approx(1.0)
        assert c.R[1] @ [0, 0, 1.0] < 0                                # image y points down in the world
        uv = rng.uniform([0, 0], [1088, 1920], (50, 2))
        back, _ = c.project(np.concatenate([c.normalise(uv), np.ones((50, 1))], 1) @ c.R + c.position)
        np.testing.assert_allclose(back, uv, atol=1e-6)                # distortion inverts
    X = rng.normal([0, 0, 1.0], 0.4, (40, 3))
    uv = np.stack([c.project(X)[0] for c in cams])
    assert (np.stack([c.project(X)[1] for c in cams]) > 0).all()
    np.testing.assert_allclose(triangulate(cams, uv), X, atol=1e-7)
    assert reprojection_errors(cams, triangulate(cams, uv), uv).max() < 1e-5
    bad = uv.copy()
    bad[2] += 80.0
    w = np.ones(uv.shape[:-1])
    assert np.abs(triangulate(cams, bad, w) - X).max() > 1e-3       # a corrupted view moves the points
    w[2] = 0.0
    np.testing.assert_allclose(triangulate(cams, bad, w), X, atol=1e-7)  # ... unless it has no weight
    one = w.copy()
    one[1] = 0.0
    assert np.isnan(triangulate(cams, uv, one)).all()                 # one view: no point


def test_pose2sim_calibration_reprojects(external_dir, tmp_path) -> None:  # noqa: ANN001
    """MediaPipe landmarks of the four real views triangulate to points that reproject close to the
    detections, in front of every camera, at a person's size; the same with Pose2Sim's camera
    frame left unflipped or the rotation transposed is far off."""
    import dataclasses

    from biohuman.nn.predict import MEDIAPIPE_OF_JOINT
    from biohuman.validation.multiview import (LANDMARK_JOINTS, VIEWS, read_qca, triangulate_landmarks,
                                               view_features)

    d = _pose2sim(external_dir)
    cams = read_qca(d / "calibration" / "Calib.qca.txt")
    assert list(cams) == list(VIEWS)
    idx = [MEDIAPIPE_OF_JOINT[j] for j in LANDMARK_JOINTS]
    uv, w = [], []
    for v in VIEWS:
        f = view_features(d / "videos" / f"{v}.mp4", "mediapipe", 4, tmp_path / f"{v}.npz")
        assert f["detected"].mean() > 0.9
        uv.append(f["landmarks"][:, idx, :2] * f["image_size"][:2].astype(float))
        w.append(f["landmarks"][:, idx, 3] * f["detected"][:, None])
    uv, w = np.stack(uv), np.stack(w)
    cam_list = [cams[v] for v in VIEWS]
    tri = triangulate_landmarks(cam_list, uv, w)
    X = tri["points"]
    assert np.isfinite(X).all()
    med = float(np.nanmedian(tri["errors"]))
    assert med < 20.0, med                                  # MediaPipe's own scatter is ~10 px here
    for c in cam_list:
        assert (c.project(X)[1] > 1.0).all()                # in front of every camera, > 1 m away
    # the subject: ankles below the hips below the shoulders (world z is up), hips ~0.2-0.5 m apart
    z = X[..., 2].mean(0)
    L = list(LANDMARK_JOINTS)
    assert z[L.index("ankle_l")] < z[L.index("hip_l")] < z[L.index("shoulder_l")]
    hip_w = np.linalg.norm(X[:, L.index("hip_l")] - X[:, L.index("hip_r")], axis=-1)
    assert 0.1 < np.median(hip_w) < 0.5
    wrong = [dataclasses.replace(c, R=np.diag([1.0, -1, -1]) @ c.R, t=np.diag([1.0, -1, -1]) @ c.t) for c in cam_list]
    assert np.nanmedian(triangulate_landmarks(wrong, uv, w)["errors"]) > 3 * med
    transposed = []
    for c in cam_list:
        rq = np.diag([1.0, -1, -1]) @ c.R
        R = np.diag([1.0, -1, -1]) @ rq.T
        transposed.append(dataclasses.replace(c, R=R, t=-R @ c.position))
    assert np.nanmedian(triangulate_landmarks(transposed, uv, w)["errors"]) > 3 * med


# ------------------------------------------------------------------------------------------------
# The whole comparison
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multiview_run(external_dir, tmp_path_factory):  # noqa: ANN001, ANN201
    d = _pose2sim(external_dir)
    root = tmp_path_factory.mktemp("multiview")
    ckpt = tiny_trained_checkpoint(root / "tiny.pt")
    from biohuman.cli import main

    assert main(["multiview", "--checkpoint", str(ckpt), "--out", str(root / "out"), "--pose2sim", str(d)]) == 0
    return json.loads((root / "out" / "multiview.json").read_text()), root / "out"


def test_multiview_shapes_and_ranges(multiview_run) -> None:  # noqa: ANN001
    import biohuman.io as bio

    r, out = multiview_run
    assert r["views"] == ["cam01", "cam02", "cam03", "cam04"] and r["n_frames"] == 50  # 100 frames at 60 fps -> 30 fps
    assert r["time_spread_s"] < 1e-6                                      # the views share the frame times
    for v in r["views"]:
        ds = bio.open_trial(out / "predictions" / f"{v}.nc")              # spec-valid predicted trials
        a = ds.activation.values
        assert a.shape == (50, 80) and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
        assert np.isfinite(ds.joint_position.values).all() and np.isfinite(ds.joint_angle.values).all()
        p = r["predictions"][v]
        assert p["detection_rate"] > 0.9 and p["joints_finite"] and p["n_muscles"] == 80
    # the feature path used by the shuffled control reproduces `predict` exactly
    assert max(r["feature_path_max_abs_diff"].values()) < 1e-5
    assert r["calibration_round_trip_max_m"] < 1e-6
    t = r["triangulation"]
    assert t["n_frames_triangulated"] == 50 and 0 < t["reprojection_px"]["median"] < 20
    for v in r["views"]:
        m = r["mpjpe"][v]
        assert m["n_frames"] == 50 and 0 < m["pa_mpjpe_mm"] <= m["mpjpe_mm"] < 1000
    tri = np.load(out / "triangulated_landmarks.npz")
    assert tri["points"].shape == (50, 12, 3)
    for pair in r["pairs"].values():
        assert -1 <= pair["activation_pcc_median"] <= 1 and pair["n_muscles_varying"] > 0
        assert pair["joint_angle_rmse_deg"] >= 0 and pair["joint_error_world_mm"] >= 0


def test_cross_view_agreement_beats_shuffled_frames(multiview_run) -> None:  # noqa: ANN001
    """The views agree better with each other than a view with its frames shuffled does: on the
    mean over views higher activation correlation, lower joint-angle RMSE and lower world-frame 3D
    joint error, and the activation correlation of at least three of the four views on their own.
    (cam02 may be the exception: MediaPipe exchanges the person's left and right in cam02 during
    most of the movement, see `frames_with_sides_exchanged`, which mirrors its predictions.)"""
    r, _ = multiview_run
    m = r["shuffled_control_mean"]
    real, shuf = m["real"], m["shuffled"]
    assert real["activation_pcc_median"] > 0.2                        # the views' activations move together
    assert real["activation_pcc_median"] > shuf["activation_pcc_median"] + 0.2, m
    assert real["joint_angle_rmse_deg"] < shuf["joint_angle_rmse_deg"], m
    assert real["joint_error_world_mm"] < shuf["joint_error_world_mm"], m
    beats = [v for v, c in r["shuffled_control"].items()
             if c["real"]["activation_pcc_median"] > c["shuffled"]["activation_pcc_median"] + 0.1]
    assert len(beats) >= 3, r["shuffled_control"]
