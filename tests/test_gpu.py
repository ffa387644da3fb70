"""Training on a CUDA GPU (skipped without one; CI has none, ``benchmarks/gpu.py`` runs on a lent
GPU): ``convae fit --trainer.accelerator gpu`` as a real subprocess for the forward network, a
CAE and a stacked CAE, with the features held on the device and read from disk; and training
from device-held features ends at the weights of training from the memory-mapped cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_helpers import CONF, STACK_CALLBACKS, STACKS, load_checkpoint, read_metrics, run_cli
from conftest import TINY
from test_data_memory import _datamodule, train_small

from convae_lightning.data.memory import TensorBatches
from convae_lightning.models import ConvAutoencoder, ForwardClassifier

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(
    ("config", "hold"),
    [("forward", "device"), ("forward", "disk"), ("regular_ae", "device"), ("weak_stack", "auto")],
)
def test_convae_fit_trains_on_the_gpu(tmp_path, cli_cache, config, hold) -> None:
    args = [
        "fit", "--config", str(CONF / f"{config}.yaml"), *TINY,
        "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--data.hold_features", hold,
    ]  # fmt: skip
    if config in STACKS:
        args += ["--trainer.max_epochs", "2", *STACK_CALLBACKS]
    run = run_cli("convae", args, tmp_path, cli_cache, config)
    assert run.returncode == 0, run.explain()
    status = json.loads((run.run_dir / "status.json").read_text())
    assert status["status"] == "finished", status
    state = load_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    rows = read_metrics(run.run_dir / "metrics.csv")
    logged = [float(v) for row in rows for k, v in row.items() if k.startswith("val/") and v]
    assert logged and all(math.isfinite(v) for v in logged), rows


@pytest.mark.parametrize("model_class", [ForwardClassifier, ConvAutoencoder])
def test_gpu_training_from_device_held_features_equals_training_from_disk(
    toy_corpus, tmp_path, model_class
) -> None:
    weights = {}
    for hold in ("disk", "device"):
        dm = _datamodule(toy_corpus, tmp_path, hold)
        model = train_small(
            dm, model_class, tmp_path, accelerator="gpu", devices=1, deterministic=True
        )
        if hold == "device":
            loader = dm.train_dataloader()
            assert isinstance(loader, TensorBatches) and loader.features.is_cuda
        weights[hold] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for name, value in weights["disk"].items():
        # The same batches in the same order: equal up to float rounding.
        torch.testing.assert_close(weights["device"][name], value, rtol=1e-4, atol=1e-6, msg=name)
