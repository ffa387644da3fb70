"""Every benchmark still runs: each script's seconds-long smoke mode, as a subprocess, prints
its tables (no timing is asserted: numbers on a busy CI machine mean nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, tmp_path: Path) -> str:
    env = {**os.environ, "OUT": str(tmp_path), "CONVAE_CACHE_DIR": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS.parent), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "true", *args],
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
    ],
)
def test_benchmark_smoke_mode(tmp_path, script, expected, written) -> None:
    stdout = _run(script, tmp_path=tmp_path)
    assert expected in stdout
    assert (tmp_path / written).is_file()
