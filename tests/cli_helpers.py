"""Running the console scripts as real subprocesses, and reading what they leave behind."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from conftest import cli_env

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PRESETS = REPO / "callbacks"
TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

#: Every run config: the top level of conf/ (overlays live in conf/overlays/).
RUN_CONFIGS = tuple(sorted(p.stem for p in CONF.glob("*.yaml")))
STACKS = ("strong_stack", "weak_stack")
NEEDS_AUTOENCODER = ("fixed_classifier", "pretrained_classifier")

#: Stacked configs: one unit per epoch, so the stack grows during a short run (the
#: command-line list replaces the config's callbacks).
STACK_CALLBACKS = [
    "--trainer.callbacks",
    "[{class_path: convae_lightning.callbacks.StackGrowth, init_args: {max_epochs_per_unit: 1}},"
    " {class_path: convae_lightning.callbacks.TiedTransposeSync},"
    " {class_path: convae_lightning.callbacks.ReconstructionLogger,"
    "  init_args: {every_n_epochs: 1, num_examples: 2}}]",
]


@dataclass
class Run:
    """A finished CLI subprocess and where it ran."""

    returncode: int
    stdout: str
    stderr: str
    cwd: Path
    name: str

    @property
    def run_dir(self) -> Path:
        return self.cwd / "runs" / self.name / "version_0"

    def explain(self) -> str:
        return f"exit code {self.returncode}\n--- stderr (tail) ---\n{self.stderr[-4000:]}"


def run_cli(
    command: str,
    args: list[str],
    cwd: Path,
    cache: Path,
    name: str = "",
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
) -> Run:
    """Run ``convae``/``lightning`` with ``args`` in ``cwd`` (this folder importable, for the
    fault-injection helpers).

    Output goes through files, not pipes: W&B's service process of a SIGKILLed run lives on a
    while and would hold a pipe open.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    environment = cli_env(cache)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (environment.get("PYTHONPATH"), str(TESTS)) if p
    )
    environment.update(env or {})
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            [str(BIN / command), *args], cwd=cwd, env=environment, stdout=out, stderr=err,
            text=True, timeout=timeout,
        )  # fmt: skip
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, out.read(), err.read(), cwd, name)


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Nested dicts/lists/tensors equal exactly (weights, optimiser and callback states)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and sorted(map(str, a)) == sorted(map(str, b)), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
