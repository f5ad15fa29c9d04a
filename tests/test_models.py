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
        out = build_model(name, 10, c * h, width_mult=0.25).eval()(torch.randn(2, c * h, w))
    else:
        size = max(h, model.min_input_size)  # data loaders upsample to this
        out = model.eval()(torch.randn(2, c, size, size))
    assert out.shape == (2, 10)


def test_unknown_model():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("nosuch", 10, 1)
