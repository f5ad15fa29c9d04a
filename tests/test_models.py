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
