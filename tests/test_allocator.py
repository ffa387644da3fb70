"""The console scripts tune glibc's allocator: a training step's large temporaries stop being
page-faulted in again every step; a user's own MALLOC_* settings are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

#: Minor page faults of training steps of a 4-unit CAE (after two warm-up steps), once the
#: named entry point ran.
PROBE = """
import resource, sys, torch
from convae_lightning import allocator, cli
from convae_lightning.models import ConvAutoencoder
if sys.argv[1] == "cli":
    try:
        cli.main(["data", "--help"])
    except SystemExit:
        pass
torch.manual_seed(0)
torch.set_num_threads(1)
model = ConvAutoencoder()
optimizer = torch.optim.Adagrad(model.parameters())
x = torch.randn(32, 1, 201, 16)
def step():
    optimizer.zero_grad()
    (model(x) - x).pow(2).sum().backward()
    optimizer.step()
step(), step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(allocator.is_tuned(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(entry: str, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(ROOT), clean.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, entry],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    tuned, faults = out.stdout.split()[-2:]
    return tuned == "True", int(faults)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_console_entry_points_keep_large_blocks_in_the_heap() -> None:
    tuned, faults = _probe("cli")
    untuned, default_faults = _probe("none")
    assert tuned and not untuned
    # glibc's defaults map the step's large blocks afresh every step; tuned, they are reused.
    assert default_faults > 3_000, default_faults
    assert faults < default_faults / 10, (faults, default_faults)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_a_users_malloc_settings_win() -> None:
    tuned, faults = _probe("cli", MALLOC_ARENA_MAX="2")
    assert not tuned and faults > 3_000, faults
