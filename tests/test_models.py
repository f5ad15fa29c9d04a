import pytest
import torch

from entroprune.errors import ConfigError
from entroprune.models import MODELS, build_model

SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dataset", list(SHAPES))
def test_every_model_runs_on_every_dataset_shape(name, dataset):
    c, h, w = SHAPES[dataset]
    model = build_model(name, 10, c, width_mult=0.25)
    if getattr(model, "input_dims", 2) == 1:  # a model of 1-D signals: the image's rows as channels
        length = max(w, getattr(model, "min_input_size", 1))
        out = build_model(name, 10, c * h, width_mult=0.25).eval()(torch.randn(2, c * h, length))
    elif getattr(model, "input_dims", 2) == 3:  # a model of volumes: the image as a 4-slice volume
        out = model.eval()(torch.randn(2, c, 4, h, w))
    else:
        size = max(h, model.min_input_size)  # data loaders upsample to this
        out = model.eval()(torch.randn(2, c, size, size))
    assert out.shape == (2, 10)


def test_unknown_model():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("nosuch", 10, 1)


def test_m5_takes_raw_audio_and_refuses_short_signals(tmp_path):
    """The zoo's raw-waveform net: cheap on a 1 s clip at 16 kHz (kws, built for short sequences, is 250x the
    MACs there), four prunable groups; signals shorter than its stem and pools need are one line, and its length
    is never taken as an image side to upsample to."""
    import numpy as np

    from entroprune.api import zoo_model
    from entroprune.data import load_dataset
    from entroprune.models import min_input_size
    from entroprune.structure import Structure, count_macs_params

    m5, kws = build_model("m5", 12, 1).eval(), build_model("kws", 12, 1).eval()
    clip = torch.randn(1, 1, 16000)
    macs = count_macs_params(m5, clip)[0]
    assert 3e6 < macs < 5e6 and count_macs_params(kws, clip)[0] > 200 * macs  # README: 4 M against 1 G
    assert 0.9e9 < count_macs_params(kws, clip)[0] < 1.2e9
    assert len(Structure(m5, clip).groups) == 4
    assert min_input_size("m5") == 1 and min_input_size("vgg") == 8
    shortest = m5.min_input_size
    for length, ok in ((shortest, True), (shortest - 1, False)):
        np.savez(tmp_path / "s.npz", x=np.random.default_rng(0).normal(size=(30, length)).astype(np.float32),
                 y=np.arange(30) % 3)
        data = load_dataset("signals", tmp_path / "s.npz", val_size=3, calib_size=3)
        if ok:
            assert zoo_model("m5", data, 1.0, "signals")[0](data.example_input(2)).shape == (2, 3)
        else:
            with pytest.raises(ConfigError, match=f"model 'm5' takes signals of at least {shortest} samples"):
                zoo_model("m5", data, 1.0, "signals")


def test_resnet3d_takes_volumes_prunes_its_residual_streams_and_refuses_images(tmp_path):
    """The zoo's net for volumes (short clips, scans): a 3-D ResNet whose residual streams are coupled groups,
    trained from a volumes .npz through the command line; images are refused in one line naming what it takes
    (a Conv3d would have read a batch of images as one unbatched volume)."""
    import json
    import subprocess
    import sys

    import numpy as np

    from entroprune.api import zoo_model
    from entroprune.data import load_dataset
    from entroprune.models import min_input_size
    from entroprune.structure import Structure

    net = build_model("resnet3d", 3, 1).eval()
    clip = torch.randn(1, 1, 4, 12, 12)
    structure = Structure(net, clip)
    # 3 residual streams (one per stage) and the 6 blocks' inner convs
    assert len(structure.groups) == 9 and min_input_size("resnet3d") == 1
    mods = dict(net.named_modules())
    assert sum(sum(isinstance(mods[m], torch.nn.Conv3d) for m in g.members) > 1 for g in structure.groups) == 3
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 240)
    x = rng.integers(0, 60, (240, 4, 12, 12)).astype(np.uint8)
    for i, c in enumerate(y):  # the class is whether a bright square moves over the slices
        for t in range(4):
            x[i, t, 2:6, (2 + 2 * t if c else 2):(6 + 2 * t if c else 6)] = 250
    np.savez(tmp_path / "clips.npz", x=x, y=y)
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "train", "--model", "resnet3d", "--dataset",
                           "volumes", "--data-dir", str(tmp_path / "clips.npz"), "--epochs", "2", "--width-mult",
                           "0.5", "--out", str(tmp_path / "r3d"), "--quiet"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r3d" / "metrics.json").read_text())["test_accuracy"] > 80
    images = load_dataset("digits", val_size=10, calib_size=10)
    with pytest.raises(ConfigError, match=r"model 'resnet3d' cannot run on dataset digits's images of 1x8x8 \(it "
                                          r"takes volumes\); the zoo's kws and m5 take 1-D signals, resnet3d volumes"):
        zoo_model("resnet3d", images, 1.0, "digits")
