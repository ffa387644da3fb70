"""Every benchmark still runs: each script's seconds-long smoke mode, as a subprocess, prints
its tables (no timing is asserted: numbers on a busy CI machine mean nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, tmp_path: Path, python: tuple[str, ...] = ()) -> str:
    env = {**os.environ, "OUT": str(tmp_path), "CONVAE_CACHE_DIR": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS.parent), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, *python, str(BENCHMARKS / script), "--smoke", "true", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize(
    ("script", "expected", "written"),
    [
        ("training.py", "| forward | 4 | Trainer.fit, our module |", "training.json"),
        ("layers.py", "slowest: ", "layers.json"),
        ("levers.py", "| conv | decoder 0 (8->1, 8x16) |", "levers.json"),
        ("data_path.py", "| forward | Trainer.fit, DataModule (memory) |", "data_path.json"),
        ("preprocess.py", "cold_phones_per_s", "preprocess.json"),
        ("sweeps.py", ", median pruner |", "sweeps.json"),
    ],
)
def test_benchmark_smoke_mode(tmp_path, script, expected, written) -> None:
    stdout = _run(script, tmp_path=tmp_path)
    assert expected in stdout
    assert (tmp_path / written).is_file()


#: Runs a script as ``python SCRIPT`` would, then fails if it imported a package that the lent GPU
#: machines lack (they have torch, lightning, torchmetrics, numpy, soundfile, jsonargparse).
WITHOUT_EXTRAS = """
import runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
runpy.run_path(script, run_name="__main__")
extras = {"wandb", "optuna", "optuna_integration", "torchaudio", "sqlalchemy"}
imported = sorted(extras & {name.split(".")[0] for name in sys.modules})
assert not imported, f"the GPU benchmark imported {imported}"
"""


def test_gpu_benchmark_smoke_mode_runs_every_part_with_the_gpu_machines_packages(tmp_path):
    stdout = _run("gpu.py", tmp_path=tmp_path, python=("-c", WITHOUT_EXTRAS))
    if not torch.cuda.is_available():
        assert "CUDA is not available: the GPU parts are skipped" in stdout
    for heading in ("### Peaks", "### Training throughput", "### The data path alone"):
        assert heading in stdout
    for model in ("Forward", "ConvAutoencoder (blind", "Stacked", "AutoencoderClassifier"):
        assert f"| {model}" in stdout
    assert (tmp_path / "gpu.json").is_file()
