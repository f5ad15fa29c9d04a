"""Small architectures on the patterns real model families use, for the structure and the
architecture suite (tests/test_architectures.py). Random weights, 1-channel 16x16 inputs (1-D nets: 1-channel
signals of 64 samples)."""

from __future__ import annotations

import torch


class AuxHeadNet(torch.nn.Module):
    """A main classifier and an auxiliary conv head: two outputs, both shapes must survive pruning."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.aux = torch.nn.Conv2d(16, 5, 1)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        a = self.aux(h).mean((2, 3))
        h = torch.relu(self.c2(h))
        return self.fc(h.mean((2, 3))), a


class DenseBlock(torch.nn.Module):
    """DenseNet-style: each conv reads the concatenation of all before it."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.b0 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c1, self.b1 = nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(24, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x0 = torch.relu(self.b0(self.c0(x)))
        x01 = torch.cat([x0, torch.relu(self.b1(self.c1(x0)))], 1)
        x2 = torch.relu(self.b2(self.c2(x01)))
        x3 = torch.relu(self.b3(self.c3(torch.cat([x01, x2], 1))))
        return self.fc(x3.mean((2, 3)))


class NestedConcat(torch.nn.Module):
    """torch-pruning's cascaded-concat pattern: a concat inside a concat, groups read twice."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.a, self.b = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.c, self.d = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(48, 32, 3, padding=1)
        self.e, self.fc = nn.Conv2d(64, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        a = torch.relu(self.a(x))
        b = torch.relu(self.b(a))
        c = torch.relu(self.c(b))
        d = torch.relu(self.d(torch.cat([a, torch.cat([b, c], 1)], 1)))
        e = torch.relu(self.e(torch.cat([d, b, c], 1)))
        return self.fc(e.mean((2, 3)))


class ResNeXtBlock(torch.nn.Module):
    """A residual block around a grouped 3x3 conv (groups=4), as in ResNeXt; a groups=2 conv after it."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.bs = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.reduce, self.br = nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32)
        self.grouped, self.bg = nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32)
        self.expand, self.be = nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32)
        self.pair, self.bp = nn.Conv2d(32, 16, 3, padding=1, groups=2), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.bs(self.stem(x)))
        y = torch.relu(self.br(self.reduce(h)))
        y = torch.relu(self.bg(self.grouped(y)))
        h = torch.relu(h + self.be(self.expand(y)))
        return self.fc(torch.relu(self.bp(self.pair(h))).mean((2, 3)))


class GroupNormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.n0 = nn.Conv2d(1, 64, 3, padding=1), nn.GroupNorm(4, 64)
        self.c1, self.n1 = nn.Conv2d(64, 96, 3, padding=1), nn.GroupNorm(4, 96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x):
        x = torch.relu(self.n1(self.c1(torch.relu(self.n0(self.c0(x))))))
        return self.fc(x.mean((2, 3)))


class UNet(torch.nn.Module):
    """A U-Net step: a strided conv, a transposed conv back up, a skip concatenation (``dims=1``: the 1-D U-Net of
    audio denoising and time-series segmentation; ``dims=3``: the 3-D U-Net of volume segmentation)."""

    def __init__(s, dims: int = 2):
        super().__init__()
        nn = torch.nn
        C, T = {1: (nn.Conv1d, nn.ConvTranspose1d), 2: (nn.Conv2d, nn.ConvTranspose2d),
                3: (nn.Conv3d, nn.ConvTranspose3d)}[dims]
        s.d1 = C(1, 16, 3, padding=1)
        s.d2 = C(16, 32, 3, stride=2, padding=1)
        s.up = T(32, 16, 2, stride=2)
        s.u1 = C(32, 16, 3, padding=1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        a = torch.relu(s.d1(x))
        b = torch.relu(s.d2(a))
        u = torch.relu(s.up(b))
        return s.fc(torch.relu(s.u1(torch.cat([a, u], 1))).flatten(2).mean(2))


class SK(torch.nn.Module):
    """SKNet-style attention: two branches stacked, weights reshaped to (branch, channel)."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.c0 = C(1, 16, 3, padding=1)
        s.b1 = C(16, 16, 3, padding=1)
        s.b2 = C(16, 16, 5, padding=2)
        s.att = nn.Linear(16, 32)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = torch.relu(s.c0(x))
        u = torch.stack([s.b1(h), s.b2(h)], 1)
        w = torch.softmax(s.att(u.sum(1).mean((2, 3))).view(-1, 2, 16, 1, 1), 1)
        return s.fc((u * w).sum(1).mean((2, 3)))


class Gen(torch.nn.Module):
    """A Linear reshaped into conv channels, as in a generator."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.lin = nn.Linear(256, 16 * 4 * 4)
        s.c = C(16, 16, 3, padding=1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = s.lin(x.flatten(1)).view(-1, 16, 4, 4)
        return s.fc(torch.relu(s.c(h)).mean((2, 3)))


class Shuffle(torch.nn.Module):
    """ShuffleNet's channel shuffle after a grouped 1x1 conv."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.c0 = C(1, 16, 3, padding=1)
        s.g = C(16, 16, 1, groups=4)
        s.c2 = C(16, 16, 3, padding=1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = torch.relu(s.g(torch.relu(s.c0(x))))
        n, c, hh, ww = h.shape
        h = h.view(n, 4, c // 4, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)
        return s.fc(torch.relu(s.c2(h)).mean((2, 3)))


class DWMult(torch.nn.Module):
    """A depthwise conv with a channel multiplier (8 in, 16 out, groups=8)."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.c0 = C(1, 8, 3, padding=1)
        s.dw = C(8, 16, 3, padding=1, groups=8)
        s.c2 = C(16, 16, 1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        return s.fc(torch.relu(s.c2(torch.relu(s.dw(torch.relu(s.c0(x)))))).mean((2, 3)))


class Incep(torch.nn.Module):
    """Inception-like: branches concatenated, then added to a 1x1 projection."""

    def __init__(s):
        super().__init__()
        nn, C = torch.nn, torch.nn.Conv2d
        s.c0 = C(1, 16, 3, padding=1)
        s.b1 = C(16, 8, 1)
        s.b2 = C(16, 8, 3, padding=1)
        s.proj = C(16, 16, 1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = torch.relu(s.c0(x))
        y = torch.cat([s.b1(h), s.b2(h)], 1) + s.proj(h)
        return s.fc(torch.relu(y).mean((2, 3)))


class Inception(torch.nn.Module):
    """Multi-branch: 1x1, 3x3 and 5x5 branches and a pooled 1x1, concatenated, then a conv."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.b1, self.b3, self.b5 = nn.Conv2d(16, 8, 1), nn.Conv2d(16, 8, 3, padding=1), nn.Conv2d(16, 8, 5, padding=2)
        self.bp = nn.Conv2d(16, 8, 1)
        self.mix, self.fc = nn.Conv2d(32, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        pooled = self.bp(torch.nn.functional.max_pool2d(h, 3, 1, 1))
        y = torch.relu(torch.cat([self.b1(h), self.b3(h), self.b5(h), pooled], 1))
        return self.fc(torch.relu(self.mix(y)).mean((2, 3)))


class MobileNetV3Block(torch.nn.Module):
    """An inverted residual with a depthwise conv, squeeze-and-excitation and hardswish (MobileNetV3)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.bs = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.expand, self.be = nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48)
        self.dw, self.bd = nn.Conv2d(48, 48, 3, padding=1, groups=48, bias=False), nn.BatchNorm2d(48)
        self.se_reduce, self.se_expand = nn.Conv2d(48, 12, 1), nn.Conv2d(12, 48, 1)
        self.project, self.bp = nn.Conv2d(48, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.head, self.fc = nn.Conv2d(16, 32, 1), nn.Linear(32, 10)

    def forward(self, x):
        nn = torch.nn.functional
        h = nn.hardswish(self.bs(self.stem(x)))
        y = nn.hardswish(self.be(self.expand(h)))
        y = nn.hardswish(self.bd(self.dw(y)))
        s = nn.hardsigmoid(self.se_expand(torch.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        h = h + self.bp(self.project(y * s))
        return self.fc(nn.hardswish(self.head(h)).mean((2, 3)))


class FPN(torch.nn.Module):
    """A feature pyramid: three stages, lateral 1x1 convs, top-down nearest upsampling and sums."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c1, self.c2, self.c3 = (nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 24, 3, 2, 1),
                                     nn.Conv2d(24, 32, 3, 2, 1))
        self.l1, self.l2, self.l3 = nn.Conv2d(16, 16, 1), nn.Conv2d(24, 16, 1), nn.Conv2d(32, 16, 1)
        self.smooth, self.fc = nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        up = torch.nn.functional.interpolate
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        c = torch.relu(self.c3(b))
        p3 = self.l3(c)
        p2 = self.l2(b) + up(p3, scale_factor=2, mode="nearest")
        p1 = self.l1(a) + up(p2, scale_factor=2, mode="nearest")
        return self.fc(torch.relu(self.smooth(p1)).mean((2, 3)))


class InstanceNormPReLU(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.n0, self.a0 = nn.Conv2d(1, 16, 3, padding=1), nn.InstanceNorm2d(16, affine=True), nn.PReLU(16)
        self.c1, self.n1, self.a1 = nn.Conv2d(16, 24, 3, padding=1), nn.InstanceNorm2d(24, affine=True), nn.PReLU(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.a1(self.n1(self.c1(self.a0(self.n0(self.c0(x))))))
        return self.fc(x.mean((2, 3)))


class ConvNeXtBlock(torch.nn.Module):
    """ConvNeXt-like: depthwise 7x7, permute to channels-last, LayerNorm, an MLP of Linears, a residual."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(1, 16, 4, stride=2)
        self.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.norm, self.up, self.down = nn.LayerNorm(16), nn.Linear(16, 64), nn.Linear(64, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = self.stem(x)
        y = self.dw(h).permute(0, 2, 3, 1)
        y = self.down(torch.nn.functional.gelu(self.up(self.norm(y)))).permute(0, 3, 1, 2)
        return self.fc((h + y).mean((2, 3)))


class NoNorm(torch.nn.Module):
    """Plain convs with biases and no normalisation at all."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.c1, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, 2, 1), nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(torch.relu(self.c0(x)))))).mean((2, 3)))


class ConvCalledTwice(torch.nn.Module):
    """One conv module applied twice (shared weights): its input and output channels are one stream."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.shared, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 24, 3, padding=1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        h = torch.relu(self.c0(x))
        h = torch.relu(self.shared(torch.relu(self.shared(h))))
        return self.fc(torch.relu(self.c2(h)).mean((2, 3)))


class AttentionHeads(torch.nn.Module):
    """Self-attention over positions inside a CNN (YOLOv10's and other hybrid nets' blocks): a 1x1 conv's
    output reshaped into query, key and value heads. torch-pruning's search for the qkv conv's group grows
    without end here (VainF/Torch-Pruning#430)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.qkv, self.proj = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 48, 1), nn.Conv2d(16, 16, 1)
        self.c2, self.fc = nn.Conv2d(16, 24, 3, padding=1), nn.Linear(24, 10)

    def forward(self, x):
        h = torch.relu(self.c0(x))
        b, _, hh, ww = h.shape
        q, k, v = self.qkv(h).reshape(b, 3, 2, 8, hh * ww).unbind(1)  # 2 heads of 8 channels
        att = torch.softmax(q.transpose(-1, -2) @ k / 8 ** 0.5, -1)
        h = h + self.proj((v @ att.transpose(-1, -2)).reshape(b, 16, hh, ww))
        return self.fc(torch.relu(self.c2(h)).mean((2, 3)))


class ChannelSlice(torch.nn.Module):
    """A fixed slice of a group's channels (``x[:, :6]``) feeding a side branch, as multi-task heads and partial
    convolutions take theirs: torch-pruning maps the slice right only where the kept channels include every
    sliced one. ``sliced=False`` leaves the slice out (the structure is then built without it)."""

    def __init__(self, sliced: bool = True):
        super().__init__()
        nn = torch.nn
        self.c0, self.b0 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c1, self.side = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(6, 10, 1)
        self.fc = nn.Linear(16, 10)
        self.sliced = sliced

    def forward(self, x):
        h = torch.relu(self.b0(self.c0(x)))
        y = self.fc(torch.relu(self.c1(h)).mean((2, 3)))
        return y + self.side(h[:, :6]).mean((2, 3)) if self.sliced else y


class ConvTransformer(torch.nn.Module):
    """A hybrid CNN (CoAtNet, MobileViT, a DETR backbone): a conv stem, then a transformer encoder layer over
    its positions. torch-pruning cuts the encoder's width with the stem's channels, to counts its heads do not
    divide."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.b0 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c1 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = self.c1(torch.relu(self.b0(self.c0(x))))
        return self.fc(self.enc(h.flatten(2).transpose(1, 2)).mean(1))


class PositionalEmbedding(torch.nn.Module):
    """A learned positional embedding added to a conv's maps (hybrid nets before their attention): a parameter
    outside any layer, which torch-pruning cuts along its last dimension (the width), not its channels."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c0, self.c1 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 24, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 16, 16, 16) * 0.1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        h = torch.relu(self.c0(x)) + self.pos
        return self.fc(torch.relu(self.c1(h)).mean((2, 3)))


class TCResNet(torch.nn.Module):
    """A keyword-spotting net on 1-D signals (TC-ResNet, MatchboxNet): a strided Conv1d stem, a residual block of
    depthwise-separable Conv1d with BatchNorm1d, a pooled Linear classifier."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.b0 = nn.Conv1d(1, 24, 5, stride=2, padding=2, bias=False), nn.BatchNorm1d(24)
        self.dw, self.b1 = nn.Conv1d(24, 24, 9, padding=4, groups=24, bias=False), nn.BatchNorm1d(24)
        self.pw, self.b2 = nn.Conv1d(24, 24, 1, bias=False), nn.BatchNorm1d(24)
        self.c3, self.b3 = nn.Conv1d(24, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm1d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.b0(self.stem(x)))
        h = torch.relu(h + self.b2(self.pw(torch.relu(self.b1(self.dw(h))))))
        return self.fc(torch.nn.functional.adaptive_avg_pool1d(torch.relu(self.b3(self.c3(h))), 1).flatten(1))


class Video3D(torch.nn.Module):
    """A video / volume classifier of 3-D convs (C3D, R(2+1)D, X3D's kind): a stem strided in space only, a
    residual block of a depthwise 3x3x3 and a pointwise Conv3d with BatchNorm3d, a strided conv, a pooled Linear."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.b0 = nn.Conv3d(1, 16, 3, stride=(1, 2, 2), padding=1, bias=False), nn.BatchNorm3d(16)
        self.dw, self.b1 = nn.Conv3d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm3d(16)
        self.pw, self.b2 = nn.Conv3d(16, 16, 1, bias=False), nn.BatchNorm3d(16)
        self.c3, self.b3 = nn.Conv3d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm3d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.b0(self.stem(x)))
        h = torch.relu(h + self.b2(self.pw(torch.relu(self.b1(self.dw(h))))))
        return self.fc(torch.nn.functional.adaptive_avg_pool3d(torch.relu(self.b3(self.c3(h))), 1).flatten(1))


def zoo(name: str):
    from entroprune.models import build_model

    return lambda: build_model(name, 10, 1, 0.25 if name != "resnet20" else 0.5)


# name -> (factory, the layer torch-pruning gets wrong and the user must leave whole, or None).
# The budget must end within 2 points of the target (the search's final policy is topped up when the
# episode's wall left room), or further under only where no group can keep one more channel step without
# passing it (``full``: coarse steps; AuxHeadNet at 50%: one step of its 16-channel group is 2.8 points, and
# GroupNorm's steps are its group count); a net with a layer left whole has fewer groups and coarser steps to
# fill it with (sknet at 50%: 44%, no step fits), so those get 7 points.
SLACK: dict[str, float] = {}
SLACK_AFTER_IGNORE = 0.07
ARCHITECTURES = {
    "plain (vgg)": (zoo("vgg"), None),
    "residual (resnet20)": (zoo("resnet20"), None),
    "depthwise (mobilenetv2)": (zoo("mobilenetv2"), None),
    "densenet concat": (DenseBlock, None),
    "nested concat": (NestedConcat, None),
    "inception concat": (Inception, None),
    "resnext grouped conv": (ResNeXtBlock, None),
    "mobilenetv3 se + hardswish": (MobileNetV3Block, None),
    "u-net transposed conv + skip concat": (UNet, None),
    "fpn with interpolate": (FPN, None),
    "groupnorm": (GroupNormNet, None),
    "instancenorm + prelu": (InstanceNormPReLU, None),
    "convnext layernorm + permute": (ConvNeXtBlock, None),
    "no normalisation": (NoNorm, None),
    "a conv called twice": (ConvCalledTwice, None),
    "several outputs": (AuxHeadNet, None),
    "linear -> reshape -> conv": (Gen, "lin"),
    "channel shuffle": (Shuffle, "g"),
    "sknet stack attention": (SK, "b1"),
    "depthwise channel multiplier": (DWMult, "c0"),
    "inception concat + projection": (Incep, "b1"),
    "attention heads (reshape)": (AttentionHeads, "qkv"),
    "channel slice into a side branch": (ChannelSlice, "c0"),
    "conv stem + transformer encoder": (ConvTransformer, "c1"),
    "learned positional embedding": (PositionalEmbedding, "c0"),
    "1-d keyword spotting (residual, depthwise)": (TCResNet, None),
    "1-d u-net (transposed conv + skip concat)": (lambda: UNet(dims=1), None),
    "3-d video net (residual, depthwise)": (Video3D, None),
    "3-d u-net (transposed conv + skip concat)": (lambda: UNet(dims=3), None),
}
#: One input's shape, where it is not 1x16x16.
INPUT_SHAPES = {"1-d keyword spotting (residual, depthwise)": (1, 64), "1-d u-net (transposed conv + skip concat)": (1, 64),
                "3-d video net (residual, depthwise)": (1, 6, 12, 12), "3-d u-net (transposed conv + skip concat)": (1, 6, 8, 8)}


def run_architecture(name: str, target: float, out_dir, pt2: bool = False) -> dict:
    """Search (a few episodes), prune, run and export one architecture; what the suite checks and
    benchmarks/architectures.py tabulates (``pt2``: also torch.export's capture, the benchmark's alone: it is slow)."""
    import numpy as np

    import entroprune as ep
    from entroprune.errors import ConfigError
    from entroprune.export import onnx_bytes, onnx_session
    from entroprune.structure import Structure

    factory, bad = ARCHITECTURES[name]
    torch.manual_seed(0)
    net = factory().eval()
    x = torch.randn(32, *INPUT_SHAPES.get(name, (1, 16, 16)), generator=torch.Generator().manual_seed(1))
    row: dict = {"name": name, "target": target, "refusal": None, "ignored": [], "unreachable": None}
    if bad is not None:
        try:
            Structure(net, x[:1])
        except ConfigError as exc:
            row["refusal"] = str(exc)
        row["ignored"] = [bad]
        floor = Structure(net, x[:1], ignored=row["ignored"])
        smallest = floor.macs([floor.round_group(g, 0.05) for g in floor.groups]) / floor.total_macs
        if smallest > target:  # what stays whole holds too much: refused as unreachable, then a reachable target
            try:
                ep.search_module(net, x[:1], x, out_dir / "unreachable", ep.SearchConfig(
                    macs_target=target, min_keep=0.05, ignored_layers=row["ignored"], round_to=1))
            except ConfigError as exc:
                row["unreachable"] = str(exc)
            target = row["target"] = round(min(1.0, smallest + 0.1), 2)
    # unrounded: the nets are a few channels wide (16-channel groups rounded to 8 could not reach most targets)
    cfg = ep.SearchConfig(macs_target=target, episodes=3, warmup=1, calib_size=16, rerank_top_k=0, min_keep=0.05,
                          band=None, ignored_layers=row["ignored"], round_to=1)
    res = ep.search_module(net, x[:1], x, out_dir / "s", cfg)
    pruned, _ = ep.prune_module(net, x[:1], res, calib=x, refit=True)  # the kept weights refitted on x
    flat = lambda out: list(out) if isinstance(out, (tuple, list)) else [out]  # noqa: E731
    with torch.no_grad():
        before, after = flat(net(x[:4])), flat(pruned(x[:4]))
    session = onnx_session(onnx_bytes(pruned, x[:1]))
    got = session.run(None, {session.get_inputs()[0].name: x[:4].numpy()})
    row.update(
        shapes_kept=[o.shape for o in after] == [o.shape for o in before],
        macs=ep.count_macs_params(pruned, x[:1])[0] / ep.count_macs_params(net, x[:1])[0],
        onnx_max_diff=max(float(np.abs(g - a.numpy()).max()) for g, a in zip(got, after, strict=True))
        if len(got) == len(after) else float("inf"),
        groups=len(res.policy), full=res.summary["within_tolerance"])
    if pt2:
        from entroprune.export import exported_program

        try:
            with torch.no_grad():
                got = flat(exported_program(pruned, x[:1]).module()(x[:4]))
            row["pt2_max_diff"] = max(float((g - a).abs().max()) for g, a in zip(got, after, strict=True))
        except ConfigError as exc:
            row["pt2_max_diff"], row["pt2_refusal"] = None, str(exc)
    return row
