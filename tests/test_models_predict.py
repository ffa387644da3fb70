"""``predict_step`` of every model through a real ``Trainer.predict``: the ``convae predict``
contract (per-sample outputs, the split's row index passed through)."""

from __future__ import annotations

import pytest
import torch
from model_helpers import TINY_ARCH, TINY_SHAPE, tiny_trainer
from torch.utils.data import DataLoader, TensorDataset

from convae_lightning.models import (
    AutoencoderClassifier,
    ConvAutoencoder,
    ForwardClassifier,
    StackedAutoencoder,
)

N = 10


def loader(with_index: bool) -> DataLoader:
    x = torch.randn(N, *TINY_SHAPE)
    y = torch.randint(0, 48, (N,))
    tensors = (x, y, torch.arange(100, 100 + N)) if with_index else (x, y)
    return DataLoader(TensorDataset(*tensors), batch_size=4)


def predict(tmp_path, model, with_index: bool = True) -> dict[str, torch.Tensor]:
    batches = tiny_trainer(tmp_path).predict(model, dataloaders=loader(with_index))
    assert len(batches) == 3  # 4 + 4 + 2 samples
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


@pytest.mark.parametrize(
    "factory",
    [
        lambda: ForwardClassifier(TINY_SHAPE, **TINY_ARCH),
        lambda: AutoencoderClassifier(TINY_SHAPE, encoder="random", **TINY_ARCH),
    ],
)
def test_classifiers_predict_posteriors_and_labels(tmp_path, factory) -> None:
    model = factory()
    out = predict(tmp_path, model)
    assert set(out) == {"posteriors", "predicted", "index"}
    assert out["posteriors"].shape == (N, 48)
    assert torch.allclose(out["posteriors"].sum(1), torch.ones(N))
    assert torch.equal(out["predicted"], out["posteriors"].argmax(1))
    assert out["index"].dtype == torch.int64
    assert torch.equal(out["index"], torch.arange(100, 100 + N))


@pytest.mark.parametrize("reconstructions", [False, True])
def test_autoencoder_predicts_codes_and_optionally_reconstructions(tmp_path, reconstructions):
    model = ConvAutoencoder(
        TINY_SHAPE, num_units=2, predict_reconstructions=reconstructions, **TINY_ARCH
    )
    out = predict(tmp_path, model, with_index=False)
    expected = {"codes", "reconstructions"} if reconstructions else {"codes"}
    assert set(out) == expected  # no index in (x, y) batches
    assert out["codes"].shape == (N, *model.specs[1].output_shape)
    if reconstructions:
        assert out["reconstructions"].shape == (N, *TINY_SHAPE)


def test_stacked_autoencoder_predicts_the_codes_of_its_active_units(tmp_path) -> None:
    model = StackedAutoencoder(input_shape=TINY_SHAPE, predict_reconstructions=True, **TINY_ARCH)
    model.grow()
    out = predict(tmp_path, model)
    assert out["codes"].shape == (N, *model.specs[1].output_shape)  # 2 of 4 units
    assert out["reconstructions"].shape == (N, *TINY_SHAPE)
    assert torch.equal(out["index"], torch.arange(100, 100 + N))
