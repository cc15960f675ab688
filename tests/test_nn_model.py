"""BioHumanNet: output shapes and ranges, key-padding masking, 6D rotations, heads, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _nn_data import random_checkpoint


@pytest.fixture(autouse=True)
def _one_torch_thread():  # noqa: ANN202 - small CPU work runs fastest on one thread on a shared machine
    from biohuman.nn.frontend import torch_threads

    with torch_threads(1):
        yield


def _cfg(frontend: str = "mediapipe_effnet", **kw) -> dict:
    from biohuman.nn.fk import ForwardKinematics

    coords = ["hip_flexion_r", "hip_adduction_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "knee_angle_l",
              "ankle_angle_l", "lumbar_extension", "arm_flex_r", "elbow_flex_r"]
    return {"coordinates": coords, "muscles": [f"m{i}" for i in range(12)], "joints": ForwardKinematics().joints,
            "frontend": frontend, "d_model": 32, "n_layers": 2, "n_heads": 4, "dropout": 0.0, **kw}


def _batch(b: int, t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lm = torch.rand(b, t, 33, 4, generator=g)
    return {"landmarks": lm, "world": torch.randn(b, t, 33, 3, generator=g) * 0.3,
            "cnn": torch.rand(b, t, 1280, generator=g), "detected": torch.ones(b, t, dtype=torch.bool),
            "bbox": torch.rand(b, t, 4, generator=g) * 100, "mask": torch.ones(b, t, dtype=torch.bool),
            "height_m": torch.linspace(1.6, 1.9, b)}


def test_shapes_and_ranges() -> None:
    from biohuman.nn.model import BioHumanNet

    cfg = _cfg()
    model = BioHumanNet(cfg).eval()
    with torch.no_grad():
        out = model(_batch(3, 20))
    assert out["coords"].shape == (3, 20, len(cfg["coordinates"]))
    assert out["pelvis_rot6d"].shape == (3, 20, 6)
    assert out["root"].shape == (3, 20, 3) and torch.all(out["root"][:, 0] == 0)
    assert out["activation"].shape == (3, 20, 12)
    assert out["joints"].shape == (3, 20, len(cfg["joints"]), 3)
    a = out["activation"]
    assert torch.all((a >= 0) & (a <= 1))
    # the pelvis joint sits at the root translation
    torch.testing.assert_close(out["joints"][:, :, cfg["joints"].index("pelvis")], out["root"])
    # per-body scale factors replace the height scaling (same factors as the height -> same joints)
    b = _batch(3, 20)
    b["body_scale"] = model.fk.scale_from_height(b["height_m"]).float()
    with torch.no_grad():
        same = model(b)["joints"]
        b["body_scale"] = b["body_scale"] * 1.1
        bigger = model(b)["joints"]
    torch.testing.assert_close(same, out["joints"])
    assert not torch.allclose(bigger, out["joints"])


def test_padded_frames_do_not_change_real_frames() -> None:
    from biohuman.nn.model import BioHumanNet

    model = BioHumanNet(_cfg()).eval()
    full = _batch(2, 40, seed=1)
    full["mask"][1, 25:] = False
    with torch.no_grad():
        a = model(full)
        other = {k: v.clone() for k, v in full.items()}
        for k in ("landmarks", "world", "cnn"):
            other[k][1, 25:] = torch.randn_like(other[k][1, 25:]) * 5  # garbage in padded frames
        b = model(other)
        short = {k: v[1:2, :25] if v.ndim >= 2 else v[1:2] for k, v in full.items()}
        c = model(short)
    for k in a:
        torch.testing.assert_close(a[k][1, :25], b[k][1, :25], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a[k][1, :25], c[k][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a[k][0], b[k][0])
    # and real frames do depend on other real frames (the transformer mixes time)
    changed = {k: v.clone() for k, v in full.items()}
    changed["cnn"][1, 10] += 3.0
    with torch.no_grad():
        d = model(changed)
    assert (d["activation"][1, 0] - a["activation"][1, 0]).abs().max() > 0


def test_rot6d_is_orthonormal_and_pelvis_angles_round_trip() -> None:
    from biohuman.nn.model import matrix_to_pelvis_angles, matrix_to_rot6d, pelvis_matrix, rot6d_to_matrix

    r = rot6d_to_matrix(torch.randn(100, 6, dtype=torch.float64))
    torch.testing.assert_close(r.transpose(-1, -2) @ r, torch.eye(3, dtype=torch.float64).expand(100, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(100, dtype=torch.float64))
    torch.testing.assert_close(rot6d_to_matrix(matrix_to_rot6d(r)), r)
    ang = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    m = pelvis_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
    torch.testing.assert_close(matrix_to_pelvis_angles(m), ang)


def test_heads_frontends_and_norm() -> None:
    from biohuman.errors import ConfigError, InputFormatError
    from biohuman.nn.model import BioHumanNet, input_norm_stats

    only_act = BioHumanNet(_cfg(heads={"pose": False})).eval()
    with torch.no_grad():
        out = only_act(_batch(1, 8))
    assert set(out) == {"activation"}
    only_pose = BioHumanNet(_cfg(heads={"activation": False})).eval()
    with torch.no_grad():
        assert "activation" not in only_pose(_batch(1, 8))
    with pytest.raises(ConfigError):
        BioHumanNet(_cfg(heads={"pose": False, "activation": False}))
    pix = BioHumanNet(_cfg("effnet")).eval()
    b = _batch(1, 8)
    del b["landmarks"], b["world"]
    with torch.no_grad():
        assert pix(b)["activation"].shape == (1, 8, 12)
    with pytest.raises(InputFormatError, match="landmarks"):
        BioHumanNet(_cfg("mediapipe"))(b)
    # normalisation statistics change the outputs and are kept in the state dict
    model = BioHumanNet(_cfg()).eval()
    samples = [{k: v[0].numpy() for k, v in _batch(1, 30, seed=s).items() if k not in ("mask", "height_m")}
                for s in range(3)]
    norm = input_norm_stats(samples, "mediapipe_effnet")
    assert norm["cnn"][0].shape == (1280,) and (norm["cnn"][1] > 0).all()
    x = _batch(1, 8)
    with torch.no_grad():
        before = model(x)["activation"]
        model.set_norm(norm)
        after = model(x)["activation"]
    assert not torch.allclose(before, after)
    assert np.allclose(model.state_dict()["mean_cnn"].numpy(), norm["cnn"][0])


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    from biohuman.errors import InputFormatError
    from biohuman.nn.model import BioHumanNet

    path = random_checkpoint(tmp_path / "m.pt", d_model=32, n_layers=1)
    ckpt = torch.load(path, weights_only=False)
    a = BioHumanNet(ckpt["model_cfg"])
    a.load_state_dict(ckpt["model_state"])
    b = BioHumanNet.from_checkpoint(path)
    x = _batch(1, 10)
    with torch.no_grad():
        oa, ob = a.eval()(x), b(x)
    for k in oa:
        torch.testing.assert_close(oa[k], ob[k])
    with pytest.raises(InputFormatError):
        BioHumanNet.from_checkpoint(tmp_path / "missing.pt")


def test_predicted_activations_stay_within_the_muscles_control_bounds() -> None:
    """Both activation predictors map their logits into each muscle's control bounds read from the
    model (0.01 .. 1 on Rajagopal2015; names the model lacks keep 0 .. 1), in training and at
    inference, and stay differentiable there."""
    from biohuman.nn.model import ActivationBounds
    from biohuman.train.baselines import PoseToActivation

    b = ActivationBounds(["soleus_r", "not_a_muscle", "glmax1_l"])
    x = torch.tensor([[-30.0, -30.0, 0.0], [30.0, 0.0, -30.0]], requires_grad=True)
    a = b(x)
    assert torch.allclose(a, torch.tensor([[0.01, 0.0, 0.505], [1.0, 0.5, 0.01]]), atol=1e-6)
    a[0, 2].backward()
    assert float(x.grad[0, 2]) == pytest.approx(0.99 * 0.25)
    torch.manual_seed(0)
    net = PoseToActivation({"n_coords": 2, "n_muscles": 2, "muscles": ["soleus_r", "tibant_r"], "hidden": 8,
                            "layers": 1})
    with torch.no_grad():
        net.out.bias.fill_(-12.0)  # sigmoid ~ 6e-6: the floor
        batch = {"y_coords": torch.zeros(1, 5, 2), "mask": torch.ones(1, 5, dtype=torch.bool),
                 "height_m": torch.tensor([1.7])}
        for mode in (net.train(), net.eval()):
            out = mode(batch)["activation"]
            assert float(out.min()) >= 0.01 and float(out.max()) < 0.0101


def test_pose_conditioned_activation_branch() -> None:
    """The pose branch reads noisy labelled coordinates in training (`input: labels`) and the pose
    head's prediction, detached, at inference; `input: predicted` never reads labels; activation
    losses never reach the pose head through it; bad settings are refused."""
    from biohuman.errors import ConfigError
    from biohuman.nn.model import BioHumanNet, pose_branch_config

    torch.manual_seed(0)
    cfg = _cfg("mediapipe", pose_branch={"input": "labels", "hidden": 8, "layers": 2, "input_noise_deg": 0.0})
    model = BioHumanNet(cfg)
    b = _batch(2, 12)
    b["y_coords"] = torch.randn(2, 12, len(cfg["coordinates"]))
    other = {**b, "y_coords": b["y_coords"] + 0.5}
    model.train()
    assert not torch.allclose(model(b)["activation"], model(other)["activation"])  # training reads the labels
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(b)["activation"], model(other)["activation"])  # inference does not
        out = model(b)
        logits = model.act_head(model.encode(b)) + model.act_pose.logits(out["coords"], b["height_m"], b["mask"])
        torch.testing.assert_close(out["activation"], model.act_bounds(logits))  # ... it reads the prediction
    pred = BioHumanNet(_cfg("mediapipe", pose_branch={"input": "predicted", "hidden": 8, "layers": 2})).train()
    for m in pred.modules():  # no dropout: the two training passes must be comparable
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    a1 = pred(b)["activation"]
    torch.testing.assert_close(a1, pred(other)["activation"])
    # the activation loss reaches the branch but, through it, not the pose head
    for p in pred.act_head.parameters():
        p.requires_grad_(False)
    pred.zero_grad()
    a1.sum().backward()
    assert pred.act_pose.out.weight.grad is not None and float(pred.act_pose.out.weight.grad.abs().sum()) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in pred.pose_head.parameters())
    assert pose_branch_config(_cfg()) is None and pose_branch_config(_cfg(pose_branch=True))["input"] == "labels"
    for bad in ({"input": "video"}, {"width": 3}):
        with pytest.raises(ConfigError):
            pose_branch_config(_cfg(pose_branch=bad))
    with pytest.raises(ConfigError, match="both the pose and the activation head"):
        BioHumanNet(_cfg("mediapipe", pose_branch=True, heads={"pose": True, "activation": False}))


def test_pose_branch_state_limit_bounds_the_state_correction() -> None:
    """With `state_limit: L` the activation logits are the branch's plus L tanh(state logits / L):
    never more than L away from the branch's own, equal to the unbounded sum for small state
    logits; bad limits are refused."""
    from biohuman.errors import ConfigError
    from biohuman.nn.model import BioHumanNet, pose_branch_config

    torch.manual_seed(0)
    limit = 0.5
    model = BioHumanNet(_cfg("mediapipe", pose_branch={"hidden": 8, "layers": 2, "state_limit": limit})).eval()
    with torch.no_grad():
        model.act_head[-1].weight.mul_(50.0)  # state logits far beyond the limit
        b = _batch(2, 12)
        out = model(b)
        state = model.act_head(model.encode(b))
        branch = model.act_pose.logits(out["coords"], b["height_m"], b["mask"])
        assert float(state.abs().max()) > 5 * limit
        logits = torch.logit((out["activation"] - model.act_bounds.lo) / (model.act_bounds.hi - model.act_bounds.lo))
        assert float((logits - branch).abs().max()) <= limit + 1e-4
        torch.testing.assert_close(logits - branch, limit * torch.tanh(state / limit), atol=1e-4, rtol=1e-4)
        model.act_head[-1].weight.mul_(1e-4)  # small state logits pass almost unchanged
        model.act_head[-1].bias.zero_()
        state = model.act_head(model.encode(b))
        torch.testing.assert_close(limit * torch.tanh(state / limit), state, atol=1e-5, rtol=1e-3)
    assert pose_branch_config(_cfg(pose_branch=True))["state_limit"] is None
    for bad in ({"state_limit": 0}, {"state_limit": -1.0}, {"state_limit": 1.0, "state": False}):
        with pytest.raises(ConfigError):
            pose_branch_config(_cfg(pose_branch=bad))
