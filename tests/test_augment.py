"""Left-right mirror augmentation: the coordinate mapping against forward kinematics of the
Rajagopal model, the pelvis orientation and camera-frame labels against the mirrored scene seen by
the mirrored camera, the landmark and muscle permutations, and the wiring into training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from biohuman.errors import ConfigError
from biohuman.nn import mirror as M
from biohuman.train import augment as A
from biohuman.train import data as D

SWAP = np.diag([1.0, 1.0, -1.0])  # OpenSim ground: z is lateral


def _random_coords(names: list[str], t: int, rng: np.random.Generator) -> np.ndarray:
    q = rng.uniform(-0.6, 0.6, (t, len(names)))
    for k, n in enumerate(names):
        if n.startswith("knee_angle"):
            q[:, k] = rng.uniform(0.0, 1.8, t)
        if n == "pelvis_ty":
            q[:, k] = 0.95
    return q


def test_mirrored_coordinates_give_the_mirrored_skeleton() -> None:
    """FK of the mirrored coordinates == the mirror image (z -> -z, sides swapped) of FK of the
    originals, at random whole-body poses: every sign in the mapping is checked by the skeleton."""
    from biohuman.nn.fk import ForwardKinematics

    fk = ForwardKinematics()
    names = [c for c in fk.rotational if not c.endswith("_beta")] + ["pelvis_tx", "pelvis_ty", "pelvis_tz"]
    q = _random_coords(names, 16, np.random.default_rng(0))
    qm = M.mirror_coordinates(q, names)

    def joints(v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return fk({n: torch.as_tensor(v[:, k], dtype=torch.float64) for k, n in enumerate(names)}).numpy()

    want = joints(q)[:, M.mirror_permutation(fk.joints)] @ SWAP
    err = np.abs(joints(qm) - want).max()
    assert err < 1e-6, f"mirrored skeleton off by {err * 1000:.3f} mm"
    # a wrong sign is caught: keep pelvis_list as it is
    bad = qm.copy()
    bad[:, names.index("pelvis_list")] *= -1
    assert np.abs(joints(bad) - want).max() > 0.01
    # mirroring twice is the identity
    assert np.allclose(M.mirror_coordinates(qm, names), q)


def _sequence(rng: np.random.Generator, T: int = 12) -> dict:
    """A labelled (trial, camera) sequence in ground plus its camera (ground -> camera extrinsics)."""
    from biohuman.nn.fk import ForwardKinematics

    fk = ForwardKinematics()
    coords = D.predicted_coordinates(fk.coordinates)
    coords = [c for c in coords if c not in ("pelvis_tx", "pelvis_ty", "pelvis_tz")]
    pel = rng.uniform(-0.5, 0.5, (T, 3))
    R = D.pelvis_rotation_matrix(pel[:, 0], pel[:, 1], pel[:, 2])
    a = 0.7
    E = np.zeros((T, 4, 4))
    E[:, :3, :3] = [[np.cos(a), 0, -np.sin(a)], [0, -1, 0], [np.sin(a), 0, np.cos(a)]]
    E[:, :3, 3], E[:, 3, 3] = [0.3, 1.0, 4.0], 1.0
    muscles = ["glmax1_r", "recfem_r", "glmax1_l", "recfem_l"]
    return {
        "time": np.arange(T) / 30.0, "coordinates": coords, "joints": ["pelvis", "hip_r", "hip_l"],
        "muscles": muscles, "pelvis_tilt_list_rotation": pel,
        "y_coords": rng.uniform(-0.5, 0.5, (T, len(coords))).astype(np.float32),
        "y_joints": rng.normal(size=(T, 3, 3)).astype(np.float32),
        "y_root": rng.normal(size=(T, 3)).astype(np.float32),
        "y_activation": rng.uniform(size=(T, 4)).astype(np.float32),
        "y_pelvis_rot6d": D.rot6d(R).astype(np.float32),
        "pelvis_rotation": R, "pelvis_position": rng.normal(size=(T, 3)),
        "extrinsics": {"cam0": E},
    }


def test_pelvis_orientation_matches_the_mirrored_coordinates() -> None:
    """Ground frame: the reflected 6D pelvis orientation is the orientation built from the mirrored
    pelvis coordinates (tilt kept, list and rotation negated)."""
    s = _sequence(np.random.default_rng(1))
    m = A.mirror_sequence(s, pose_frame="ground")
    pel = s["pelvis_tilt_list_rotation"]
    names = ["pelvis_tilt", "pelvis_list", "pelvis_rotation"]
    pm = M.mirror_coordinates(pel, names)
    want = D.rot6d(D.pelvis_rotation_matrix(pm[:, 0], pm[:, 1], pm[:, 2]))
    assert np.allclose(m["y_pelvis_rot6d"], want, atol=1e-5)
    assert np.allclose(m["y_root"], s["y_root"] @ SWAP, atol=1e-6)
    assert np.allclose(m["y_joints"][:, 1], s["y_joints"][:, 2] @ SWAP, atol=1e-6)
    assert np.allclose(m["y_activation"][:, 0], s["y_activation"][:, 2])  # glmax1_r <- glmax1_l


def test_camera_frame_labels_are_those_of_the_mirrored_camera() -> None:
    """Camera frame: mirroring the camera-frame labels (x -> -x) equals reflecting the scene in
    ground, looking at it with the reflected camera and flipping that camera's image x axis."""
    s = _sequence(np.random.default_rng(2))
    cam = D.camera_frame_labels(s, "cam0")
    mirrored = A.mirror_sequence({**s, **cam}, pose_frame="camera")
    S_img = np.diag([-1.0, 1.0, 1.0])
    E = s["extrinsics"]["cam0"].copy()
    E_m = E.copy()  # the reflected camera, made right-handed again by the image flip
    E_m[:, :3, :3] = S_img @ E[:, :3, :3] @ SWAP
    E_m[:, :3, 3] = E[:, :3, 3] @ S_img
    scene = {"y_joints": s["y_joints"][:, M.mirror_permutation(s["joints"])] @ SWAP,
             "pelvis_position": s["pelvis_position"] @ SWAP,
             "pelvis_rotation": SWAP @ s["pelvis_rotation"] @ SWAP, "extrinsics": {"cam0": E_m}}
    want = D.camera_frame_labels(scene, "cam0")
    for k in ("y_joints", "y_root", "y_pelvis_rot6d"):
        assert np.allclose(mirrored[k], want[k], atol=1e-5), k
    # evaluation-only keys do not travel with the mirror image
    assert "extrinsics" not in mirrored and mirrored["mirrored"] is True


def test_landmarks_and_boxes_follow_the_flipped_image() -> None:
    rng = np.random.default_rng(3)
    T, W = 5, 640
    lm = np.concatenate([rng.uniform(0.1, 0.9, (T, 33, 3)), rng.uniform(size=(T, 33, 1))], -1).astype(np.float32)
    det = np.array([True, True, False, True, True])
    lm[~det] = 0.0
    world = rng.normal(size=(T, 33, 3)).astype(np.float32)
    bbox = np.tile(np.array([[100.0, 50.0, 300.0, 400.0]], np.float32), (T, 1))
    s = {"landmarks": lm, "world": world, "bbox": bbox, "detected": det, "image_size": np.array([W, 480])}
    m = A.mirror_sequence(s)
    # left shoulder (11) of the flipped image is the right shoulder (12) at W - x
    assert np.allclose(m["landmarks"][det, 11, 0], 1.0 - lm[det, 12, 0])
    assert np.allclose(m["landmarks"][det, 11, 1:], lm[det, 12, 1:])
    assert np.allclose(m["landmarks"][det, 0, 0], 1.0 - lm[det, 0, 0])  # the nose stays the nose
    assert np.all(m["landmarks"][~det] == 0.0)  # an undetected frame stays all zeros
    assert np.allclose(m["world"][:, 23], world[:, 24] * [-1, 1, 1])
    assert np.allclose(m["bbox"][0], [W - 300.0, 50.0, W - 100.0, 400.0])
    back = A.mirror_sequence(m)
    for k in ("landmarks", "world", "bbox"):
        assert np.allclose(back[k], s[k], atol=1e-5), k
    with pytest.raises(ConfigError, match="image features"):
        A.mirror_sequence({**s, "cnn": np.zeros((T, 8), np.float32)})
    with pytest.raises(ConfigError, match="image size"):
        A.mirror_sequence({"bbox": bbox})


def test_permutation_needs_both_sides() -> None:
    assert list(M.mirror_permutation(["a_r", "b", "a_l"])) == [2, 1, 0]
    with pytest.raises(ConfigError, match="a_l"):
        M.mirror_permutation(["a_r", "b"])
    assert sorted(M.LANDMARK_MIRROR) == list(range(33)) and M.LANDMARK_MIRROR[23] == 24


def test_training_sees_the_mirror_images(tmp_path: Path) -> None:
    """train.augment.mirror: the training part is doubled (originals first) and the checkpoint's
    normalisation statistics come from the augmented training part; validation is not mirrored."""
    import biohuman.train.run as R
    from biohuman.config import validate_config
    from biohuman.nn.model import input_norm_stats
    from biohuman.train.trainer import load_checkpoint

    from _train_data import make_dataset

    root = make_dataset(tmp_path / "res", n_subjects=4, motions=("walk", "run"))
    for npz in (root / "features").rglob("*.npz"):  # a landmark-only front-end cache
        with np.load(npz) as z:
            keep = {k: z[k] for k in z.files if k != "cnn"}
        np.savez(npz, **keep)
    base = {"results": str(root), "seed": 3, "train": {
        "frontend": "mediapipe", "epochs": 1, "pose_to_activation_epochs": 1, "window": 16, "stride": 8,
        "device": "cpu", "num_threads": 1, "progress": False, "batch_size": 8,
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2}, "splits": {"test_motions": ["run"]}}}
    config = validate_config({**base, "train": {**base["train"], "augment": {"mirror": True}}})
    R.write_splits(config, root / "train" / "splits.json")
    sp = R.read_splits(root / "train" / "splits.json")["held_out_subjects"]
    out = tmp_path / "e2e"
    R.train_method(config, root / "train" / "splits.json", "held_out_subjects", "end_to_end", out)
    seqs = R.sequences(config, list(sp.train))
    aug = A.augment_sequences(seqs, {"mirror": True})
    assert len(aug) == 2 * len(seqs) and all(a.get("mirrored") for a in aug[len(seqs):])
    ck = load_checkpoint(out / "model.pt")
    want = input_norm_stats(aug, "mediapipe")
    plain = input_norm_stats(seqs, "mediapipe")
    assert np.allclose(ck["norm"]["landmarks"][0], want["landmarks"][0])
    assert not np.allclose(ck["norm"]["landmarks"][0], plain["landmarks"][0])
    assert len(A.augment_sequences(seqs, {"mirror": False})) == len(A.augment_sequences(seqs, None)) == len(seqs)


def test_test_time_mirror_averages_a_prediction_and_its_mirror_image() -> None:
    """An exactly mirror-equivariant predictor is unchanged by test-time mirroring; a side-biased
    one has its bias cancelled; `pose_coords` travels mirrored to the second pass."""
    rng = np.random.default_rng(4)
    T = 6
    world = rng.normal(size=(T, 33, 3)).astype(np.float32)
    feats = {"world": world, "time": np.arange(T) / 30.0}
    cfg = {"coordinates": ["hip_flexion_r", "hip_flexion_l", "pelvis_list"], "muscles": ["a_r", "a_l"],
           "joints": ["hip_r", "hip_l"], "pose_frame": "camera"}

    def equivariant(f, extra):
        w = f["world"]
        return {"root": 0.5 * (w[:, 23] + w[:, 24]), "joints": w[:, [24, 23]],
                "coords": np.asarray(extra["pose_coords"])}

    q = rng.normal(size=(T, 3)).astype(np.float32)
    direct = equivariant(feats, {"pose_coords": q})
    avg = M.mirrored_average(equivariant, feats, cfg, {"pose_coords": q})
    for k in direct:
        assert np.allclose(avg[k], direct[k], atol=1e-6), k

    def biased(f, extra):
        return {"root": np.tile([[0.2, 1.0, 0.0]], (T, 1)), "activation": np.tile([[0.9, 0.1]], (T, 1))}

    avg = M.mirrored_average(biased, feats, cfg)
    assert np.allclose(avg["root"], [[0.0, 1.0, 0.0]]) and np.allclose(avg["activation"], 0.5)
    with pytest.raises(ConfigError, match="extra"):
        M.mirrored_average(biased, feats, cfg, {"cnn_extra": q})


def test_predict_sequence_uses_test_time_mirroring() -> None:
    """A BioHumanNet whose config asks for test-time mirroring predicts the mean of its plain
    outputs on the sequence and, mirrored back, on the sequence's mirror image."""
    from biohuman.nn.model import BioHumanNet
    from biohuman.train.trainer import predict_sequence

    rng = np.random.default_rng(5)
    T = 20
    lm = np.concatenate([rng.uniform(0.3, 0.7, (T, 33, 3)), np.ones((T, 33, 1))], -1).astype(np.float32)
    seq = {"landmarks": lm, "world": rng.normal(size=(T, 33, 3)).astype(np.float32),
           "detected": np.ones(T, np.float32), "time": np.arange(T) / 30.0, "height_m": 1.7}
    cfg = {"coordinates": ["hip_flexion_r", "hip_flexion_l", "lumbar_bending"], "muscles": ["a_r", "b", "a_l"],
           "joints": ["pelvis", "hip_r", "hip_l"], "frontend": "mediapipe", "d_model": 16, "n_layers": 1,
           "n_heads": 2}
    torch.manual_seed(0)
    plain = BioHumanNet(cfg).eval()
    tta = BioHumanNet({**cfg, "test_time_mirror": True, "pose_frame": "camera"}).eval()
    tta.load_state_dict(plain.state_dict())
    a = predict_sequence(plain, seq, {}, 8, 4)
    b = predict_sequence(plain, {**seq, **M.mirror_inputs(seq)}, {}, 8, 4)
    want = {k: 0.5 * (a[k] + v) for k, v in M.mirror_outputs(b, **{n: cfg[n] for n in ("coordinates", "muscles",
                                                                                           "joints")}).items()}
    got = predict_sequence(tta, seq, {}, 8, 4)
    assert set(got) == set(a)
    for k in got:
        assert np.allclose(got[k], want[k], atol=1e-5), k
    assert not np.allclose(got["activation"], a["activation"], atol=1e-4)


def test_config_refuses_mirroring_image_features() -> None:
    from biohuman.config import validate_config

    validate_config({"train": {"frontend": "mediapipe", "augment": {"mirror": True}}})
    with pytest.raises(ConfigError, match="landmark-only"):
        validate_config({"train": {"frontend": "mediapipe_effnet", "augment": {"mirror": True}}})
