"""The model zoo: small-input CNNs written out here (torchvision is deliberately not used).

Each model carries ``min_input_size``, the smallest image side it accepts, so data loaders
can upsample tiny images (scikit-learn digits are 8x8) instead of crashing deep in a forward; a model of
1-D signals says so by ``input_dims = 1`` (its ``min_input_size`` is a length in samples, checked, never
resampled to), one of volumes by ``input_dims = 3``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .errors import ConfigError
from .plugins import Registry
from .settings import DEFAULT_MODEL


def _c(ch: float, width_mult: float, divisor: int = 1) -> int:
    """Scale a channel count, keeping at least ``divisor`` channels."""
    return max(divisor, int(round(ch * width_mult / divisor)) * divisor)


class VGG(nn.Module):
    """Conv-BN-ReLU stacks with max-pooling, global average pooling and one linear layer."""

    def __init__(self, cfg: list, num_classes: int, in_channels: int, width_mult: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        pools = 0
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                pools += 1
            else:
                out = _c(v, width_mult)
                layers += [nn.Conv2d(ch, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                           nn.ReLU(inplace=True)]
                ch = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch, num_classes)
        self.min_input_size = 2 ** pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


#: Conv, BatchNorm and global pooling classes by the number of dimensions after the channels.
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a 1x1 conv + BN when the shape changes.

    torch-pruning mis-models the zero-padding ("option A") shortcut, so it is not offered.
    """

    def __init__(self, cin: int, cout: int, stride: int, dims: int = 2):
        super().__init__()
        conv, norm = _CONV[dims], _NORM[dims]
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016): three stages of 16/32/64 channels, 6n+2 layers; with ``dims=3`` the
    same layout of Conv3d for short clips and small volumes (R3D's kind, Tran et al. 2018; Hara et al. 2018)."""

    def __init__(self, depth: int, num_classes: int, in_channels: int, width_mult: float = 1.0, dims: int = 2):
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(f"ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        widths = [_c(16, width_mult), _c(32, width_mult), _c(64, width_mult)]
        self.conv1 = _CONV[dims](in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = _NORM[dims](widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1, dims))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = _POOL[dims](1)
        self.fc = nn.Linear(cin, num_classes)
        self.input_dims = dims
        self.min_input_size = 8 if dims == 2 else 1  # a volume's stride-2 stages take any size (padding 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for small inputs: stride-1 stem and three stride-2 stages (32 -> 4)."""

    # (expansion, channels, repeats, stride)
    CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int, in_channels: int, width_mult: float = 1.0):
        super().__init__()
        cin = _c(32, width_mult, 8)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(cin), nn.ReLU6(inplace=True)]
        for t, c, n, s in self.CFG:
            cout = _c(c, width_mult, 8)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _c(1280, max(1.0, width_mult), 8)
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        self.min_input_size = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class SignalBlock(nn.Module):
    """An inverted residual of 1-D convs: a 1x1 expansion, a depthwise conv along time, a 1x1 projection back onto
    the residual stream (the expansion's channels are a prunable group of their own)."""

    def __init__(self, c: int, expand: int = 2):
        super().__init__()
        h = expand * c
        self.expand, self.b0 = nn.Conv1d(c, h, 1, bias=False), nn.BatchNorm1d(h)
        self.dw, self.b1 = nn.Conv1d(h, h, 9, padding=4, groups=h, bias=False), nn.BatchNorm1d(h)
        self.project, self.b2 = nn.Conv1d(h, c, 1, bias=False), nn.BatchNorm1d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b1(self.dw(torch.relu(self.b0(self.expand(x))))))
        return torch.relu(x + self.b2(self.project(h)))


class KWS(nn.Module):
    """A keyword-spotting-style net for 1-D signals (N, C, L): a Conv1d stem, two stages of inverted residual
    blocks (the second after a stride-2 conv), a time-pooled linear head. Small enough for a microcontroller."""

    input_dims = 1  # the zoo's other models take images

    def __init__(self, num_classes: int, in_channels: int, width_mult: float = 1.0):
        super().__init__()
        width = _c(48, width_mult, 8)
        self.stem = nn.Sequential(nn.Conv1d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm1d(width),
                                  nn.ReLU())
        self.stage1 = nn.Sequential(SignalBlock(width), SignalBlock(width))
        self.down = nn.Sequential(nn.Conv1d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm1d(2 * width), nn.ReLU())
        self.stage2 = nn.Sequential(SignalBlock(2 * width), SignalBlock(2 * width))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))).mean(2))


class M5(nn.Module):
    """A raw-waveform classifier (Dai et al. 2017's M5, at the width torchaudio's speech-commands tutorial trains):
    a wide strided Conv1d stem (80 samples, stride 16: 10 ms windows at 8 kHz), three Conv1d stages each after a 4x
    max pool, a time-pooled linear head. For WAV clips at their own rate (4 M MACs on a 1 s clip at 16 kHz, where
    kws, built for short sequences, takes 1 G); it needs at least ``min_input_size`` samples."""

    input_dims = 1
    min_input_size = 80 + 16 * 63  # the stem's 64 outputs, pooled 4x three times, leave one step

    def __init__(self, num_classes: int, in_channels: int, width_mult: float = 1.0):
        super().__init__()
        w1, w2 = _c(32, width_mult, 8), _c(64, width_mult, 8)

        def stage(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
            conv = nn.Conv1d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, bias=False)
            return [conv, nn.BatchNorm1d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *stage(in_channels, w1, 80, 16), nn.MaxPool1d(4), *stage(w1, w1), nn.MaxPool1d(4),
            *stage(w1, w2), nn.MaxPool1d(4), *stage(w2, w2))
        self.head = nn.Linear(w2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(2))


VGG_SMALL = [32, 32, "M", 64, 64, "M", 128, 128, "M"]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", {
    "vgg": lambda nc, ic, w: VGG(VGG_SMALL, nc, ic, w),
    "vgg16": lambda nc, ic, w: VGG(VGG16, nc, ic, w),
    "resnet20": lambda nc, ic, w: CifarResNet(20, nc, ic, w),
    "resnet56": lambda nc, ic, w: CifarResNet(56, nc, ic, w),
    "mobilenetv2": lambda nc, ic, w: MobileNetV2(nc, ic, w),
    "kws": lambda nc, ic, w: KWS(nc, ic, w),  # 1-D signals
    "m5": lambda nc, ic, w: M5(nc, ic, w),  # raw audio
    "resnet3d": lambda nc, ic, w: CifarResNet(14, nc, ic, w, dims=3),  # volumes: short clips, scans
})
ZOO = frozenset(MODELS)  # the built-in names, which no plugin may take


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Make a model of your own buildable by name, as the zoo's are: ``builder(num_classes, in_channels,
    width_mult)`` returns the network. Its checkpoints (``save_checkpoint`` with ``ModelSpec(model=name)``)
    then stay weights-only, and every command takes them once its plugin is named (``entroprune.plugins``)."""
    if name in ZOO:  # a zoo name rebuilt by other code would load the zoo's checkpoints into another network
        raise ConfigError(f"model name {name!r} is the zoo's; register yours under another name")

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = builder
        return builder
    return add


def build_model(name: str, num_classes: int, in_channels: int, width_mult: float = 1.0) -> nn.Module:
    """Build a registered model by name; unknown names and impossible sizes are clear errors."""
    builder = MODELS.require(name)
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(f"model needs num_classes >= 1 and in_channels >= 1, got "
                          f"{num_classes} and {in_channels}")
    if not 0 < width_mult <= 16:
        raise ConfigError(f"width_mult must be in (0, 16], got {width_mult}")
    net = builder(num_classes, in_channels, width_mult)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model {name!r}'s builder returned {type(net).__name__}, not an nn.Module; it must "
                          "return the network built for (num_classes, in_channels, width_mult)")
    return net


def min_input_size(name: str) -> int:
    """The image side loaders upsample to; 1 for a model of signals (signals are never resampled, and an image
    upsampled to m5's 1088 samples a side would fill the memory before the model refused it)."""
    model = build_model(name, 2, 1, 0.25)
    return int(getattr(model, "min_input_size", 1)) if getattr(model, "input_dims", 2) == 2 else 1


__all__ = ["MODELS", "DEFAULT_MODEL", "register_model", "build_model", "min_input_size", "VGG", "CifarResNet",
           "MobileNetV2", "KWS", "M5"]
