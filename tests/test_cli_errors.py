"""Bad ``lightning fit`` input: a one-line error naming the key or path, a non-zero exit code,
and nothing written into the runs already in the working directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY, cli_env

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PRESETS = REPO / "callbacks"
BIN = Path(sys.executable).parent


def lightning(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lightning"), *args],
        cwd=cwd,
        env=cli_env(cache),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cli_cache) -> Path:
    """A working directory holding finished runs: runs/regular_ae/version_0 from a real tiny run
    and a copy of it as runs/fixed_classifier/version_0 (the names the bad runs would use)."""
    cwd = tmp_path_factory.mktemp("cli_errors")
    proc = lightning(["fit", "--config", str(CONF / "regular_ae.yaml"), *TINY], cwd, cli_cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    existing = cwd / "runs" / "regular_ae" / "version_0"
    assert (existing / "checkpoints" / "last.ckpt").is_file()
    shutil.copytree(existing, cwd / "runs" / "fixed_classifier" / "version_0", symlinks=True)
    (cwd / "empty_dir").mkdir()
    (cwd / "not_a_checkpoint.ckpt").write_text("seed_everything: 0\n")
    (cwd / "typo.yaml").write_text("trainer:\n  max_epochz: 3\n")
    return cwd


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder below ``root``: folders as "dir", files by content hash + mtime."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            out[rel] = f"{digest}:{path.stat().st_mtime_ns}"
    return out


def fit(config: str, *args: str) -> list[str]:
    return ["fit", "--config", str(CONF / f"{config}.yaml"), *TINY, *args]


#: Every bad command: name -> arguments (relative paths are inside the working directory).
BAD = {
    "unknown_model_key": fit("regular_ae", "--model.init_args.bogus_key", "3"),
    "unknown_trainer_key": fit("regular_ae", "--trainer.bogus_key", "3"),
    "unknown_key_in_file": fit("regular_ae", "--config", "typo.yaml"),
    "type:trainer.max_epochs": fit("regular_ae", "--trainer.max_epochs", "abc"),
    "type:data.batch_size": fit("regular_ae", "--data.batch_size", "many"),
    "type:seed_everything": fit("regular_ae", "--seed_everything", "x1"),
    "missing_checkpoint": fit(
        "fixed_classifier", "--model.init_args.autoencoder_checkpoint", "/nope.ckpt"
    ),
    "no_checkpoint": fit("fixed_classifier"),
    "not_a_checkpoint": fit(
        "fixed_classifier", "--model.init_args.autoencoder_checkpoint", "not_a_checkpoint.ckpt"
    ),
    "root_empty_dir": fit("regular_ae", "--data.root", "empty_dir"),
    "root_missing": fit("regular_ae", "--data.root", "/nonexistent/TIMIT"),
    "root_is_a_file": fit("regular_ae", "--data.root", "not_a_checkpoint.ckpt"),
    "missing_config": ["fit", "--config", "conf/nope.yaml"],
    "missing_preset": fit("regular_ae", "--trainer.callbacks+=callbacks/nope.yaml"),
    # Callback presets on a model they do not fit (a mistake of the command, like the above).
    "misfit:reconstruction_logger": fit(
        "forward", f"--trainer.callbacks+={PRESETS / 'reconstruction_logger.yaml'}"
    ),
    "misfit:tied_transpose_sync": fit(
        "forward", f"--trainer.callbacks+={PRESETS / 'tied_transpose_sync.yaml'}"
    ),
    "misfit:second_stack_growth": fit(
        "weak_stack", f"--trainer.callbacks+={PRESETS / 'stack_growth.yaml'}"
    ),
}


@dataclass
class Failure:
    returncode: int
    stdout: str
    stderr: str
    cwd: Path
    before: dict[str, str]
    after: dict[str, str]


def run_bad(name: str, template: Path, base: Path, cache: Path) -> Failure:
    """Run one bad command in its own copy of the working directory with the existing runs."""
    cwd = base / name.replace(":", "_")
    shutil.copytree(template, cwd, symlinks=True)
    before = snapshot(cwd)
    proc = lightning(BAD[name], cwd, cache)
    return Failure(proc.returncode, proc.stdout, proc.stderr, cwd, before, snapshot(cwd))


@pytest.fixture(scope="module")
def failures(workdir, tmp_path_factory, cli_cache) -> dict[str, Failure]:
    """Every bad command of this module, two at a time (2 cores; each spends ~5 s importing)."""
    base = tmp_path_factory.mktemp("bad_runs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_bad, name, workdir, base, cli_cache) for name in BAD}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_fails_cleanly(failures, name):
    """Non-zero exit, an ``error:`` message instead of a traceback, and no file written, changed
    or deleted under the working directory (its finished runs included)."""
    failure = failures[name]
    assert failure.returncode != 0, failure.stdout[-2000:]
    assert "Traceback" not in failure.stderr, failure.stderr[-4000:]
    assert "error:" in failure.stderr, failure.stderr[-4000:]
    before, after = failure.before, failure.after
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not changed, f"files changed by a failed run: {changed}"
    assert sorted(after.keys() - before.keys()) == [], "a failed run wrote new files"
    assert sorted(before.keys() - after.keys()) == [], "a failed run deleted files"
    assert (failure.cwd / "runs" / "regular_ae" / "version_0" / "checkpoints").is_dir()


def error_lines(failure: Failure) -> list[str]:
    """The message: the lines from ``error:`` on, without jsonargparse's dump of the whole
    rejected value (which repeats every argument)."""
    lines = failure.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), len(lines))
    return [
        line for line in lines[start:] if not line.lstrip().startswith("Given value: Namespace(")
    ]


def names(failure: Failure, *words: str) -> bool:
    """Whether one line of the error names every word."""
    return any(all(w in line for w in words) for line in error_lines(failure))


def test_unknown_model_key(failures):
    assert names(failures["unknown_model_key"], "bogus_key", "not accepted")


def test_unknown_trainer_key(failures):
    assert names(failures["unknown_trainer_key"], "trainer.bogus_key")


def test_unknown_key_in_a_config_file(failures):
    assert names(failures["unknown_key_in_file"], "trainer.max_epochz")


@pytest.mark.parametrize(
    ("key", "value"),
    [("trainer.max_epochs", "abc"), ("data.batch_size", "many"), ("seed_everything", "x1")],
)
def test_wrong_type(failures, key, value):
    failure = failures[f"type:{key}"]
    assert names(failure, f'"{key}"')
    assert names(failure, value)


def test_missing_autoencoder_checkpoint(failures):
    assert names(failures["missing_checkpoint"], "autoencoder_checkpoint", "'/nope.ckpt'")
    assert names(failures["missing_checkpoint"], "does not exist")


def test_no_autoencoder_checkpoint(failures):
    assert names(failures["no_checkpoint"], "needs autoencoder_checkpoint")


def test_autoencoder_checkpoint_that_is_no_checkpoint(failures):
    """A file torch cannot load must be reported by key and path, not as a bare unpickling
    error ("could not find MARK")."""
    failure = failures["not_a_checkpoint"]
    assert names(failure, "autoencoder_checkpoint", "not_a_checkpoint.ckpt"), failure.stderr


def test_data_root_that_is_not_a_corpus(failures):
    assert names(failures["root_empty_dir"], "empty_dir", "no utterances found")


def test_data_root_that_does_not_exist(failures):
    assert names(failures["root_missing"], "data.root '/nonexistent/TIMIT' does not exist")


def test_data_root_that_is_a_file(failures):
    assert names(failures["root_is_a_file"], "'not_a_checkpoint.ckpt'", "not a folder")


def test_missing_config_file(failures):
    assert names(failures["missing_config"], "conf/nope.yaml", "does not exist")


def test_missing_preset_file(failures):
    assert names(failures["missing_preset"], "callbacks/nope.yaml")


@pytest.mark.parametrize(
    ("preset", "words"),
    [
        ("reconstruction_logger", ("ReconstructionLogger", "ForwardClassifier")),
        ("tied_transpose_sync", ("TiedTransposeSync", "ForwardClassifier")),
        ("second_stack_growth", ("StackGrowth",)),
    ],
)
def test_callback_that_does_not_fit_the_model(failures, preset, words):
    assert names(failures[f"misfit:{preset}"], *words)
