"""Determinism check for a CUDA GPU: 4-unit switch and blind CAEs train bit-identically.

Each model (Figure 2 layers at 201x16, the global pool with switches in unit 4) trains ``steps``
AdaGrad steps in a Lightning ``Trainer(deterministic=True)`` twice from the same seed; the two
runs must end with identical weights. A control first confirms that the op we replaced,
``adaptive_max_pool2d``'s backward, is refused under deterministic algorithms on this device
(on the CPU it is not, so there the control is skipped). Exit status 0 when everything holds.

    python benchmarks/gpu_check.py                  # on the GPU machine
    python benchmarks/gpu_check.py --device cpu     # the same check on the CPU (no control)
"""

from __future__ import annotations

import os
import sys

# cuBLAS needs a fixed workspace for deterministic matmuls; set before CUDA initialises.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from jsonargparse import CLI
from torch.utils.data import DataLoader, TensorDataset

from convae_lightning.models import ConvAutoencoder


def control_refused(device: str) -> bool | None:
    """Whether ``adaptive_max_pool2d`` backward fails under deterministic algorithms
    (``None`` on the CPU, where it has a deterministic implementation)."""
    if device == "cpu":
        return None
    x = torch.randn(4, 8, 22, 2, device=device, requires_grad=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        F.adaptive_max_pool2d(x, 1, return_indices=True)[0].sum().backward()
    except RuntimeError as error:
        return "deterministic" in str(error)
    finally:
        torch.use_deterministic_algorithms(previous)
    return False


def train(unpool: str, device: str, steps: int, batch_size: int, seed: int) -> dict:
    """Weights after ``steps`` deterministic training steps of a fresh 4-unit CAE."""
    pl.seed_everything(seed, verbose=False)
    model = ConvAutoencoder(num_units=4, unpool=unpool)
    data = TensorDataset(
        torch.randn(steps * batch_size, 1, 201, 16), torch.zeros(steps * batch_size)
    )
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        deterministic=True,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=batch_size))
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def check(device: str = "cuda", steps: int = 3, batch_size: int = 64, seed: int = 0) -> bool:
    """Run the control and the two-run comparisons; print one line each.

    Args:
        device: ``cuda`` (the check that matters) or ``cpu``.
        steps: Training steps per run.
        batch_size: Samples per step.
        seed: Seed of both runs.

    Returns:
        Whether every check passed.
    """
    ok = True
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    refused = control_refused(device)
    if refused is not None:
        print(f"control: adaptive_max_pool2d backward refused under determinism: {refused}")
    for unpool in ("switch", "blind"):
        try:
            first = train(unpool, device, steps, batch_size, seed)
            second = train(unpool, device, steps, batch_size, seed)
        except RuntimeError as error:
            print(f"{unpool}: FAILED to train deterministically: {error}")
            ok = False
            continue
        differ = [k for k in first if not torch.equal(first[k], second[k])]
        moved = not torch.equal(first["encoder.3.conv.weight"], train_init(unpool, seed))
        print(
            f"{unpool}: {steps} steps twice, identical weights: {not differ}"
            f"{' (differ: ' + ', '.join(differ) + ')' if differ else ''}; unit 4 trained: {moved}"
        )
        ok = ok and not differ and moved
    print("PASS" if ok else "FAIL")
    return ok


def train_init(unpool: str, seed: int) -> torch.Tensor:
    """Unit 4's initial encoder weight (to confirm the global-pool unit received updates)."""
    pl.seed_everything(seed, verbose=False)
    return ConvAutoencoder(num_units=4, unpool=unpool).encoder[3].conv.weight.detach().clone()


if __name__ == "__main__":
    sys.exit(0 if CLI(check) else 1)
