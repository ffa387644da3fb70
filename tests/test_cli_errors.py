"""Bad input: an ``error:`` message naming the key, value or folder at fault (and what is
allowed), a non-zero exit code, and nothing written into the working directory or its runs.

Argument mistakes run in-process through ``convae_lightning.cli.main`` (they exercise the CLI's
parsing, not the console script); faults of a real process (a NaN loss, read-only folders, the
exit code and the absence of a traceback) run the console script as a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import CONF, PRESETS, run_cli
from conftest import TINY

from convae_lightning.cli import main

CSV_ONLY = "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs}}]"
QUIET = ["--progress_bar.refresh_rate", "0", "--trainer.enable_model_summary", "false"]


def fit(config: str, *args: str) -> list[str]:
    return ["fit", "--config", str(CONF / f"{config}.yaml"), *TINY, *args]


@pytest.fixture(scope="module")
def template(tmp_path_factory, cli_cache) -> Path:
    """A working directory holding finished runs: runs/regular_ae/version_0 from a real tiny run
    and a copy of it as runs/fixed_classifier/version_0 (the names the bad runs would use)."""
    cwd = tmp_path_factory.mktemp("cli_errors")
    run = run_cli("convae", fit("regular_ae", *QUIET), cwd, cli_cache)
    assert run.returncode == 0, run.explain()
    existing = cwd / "runs" / "regular_ae" / "version_0"
    assert (existing / "checkpoints" / "last.ckpt").is_file()
    shutil.copytree(existing, cwd / "runs" / "fixed_classifier" / "version_0", symlinks=True)
    (cwd / "empty_dir").mkdir()
    (cwd / "not_a_ckpt.ckpt").write_text("seed_everything: 0\n")
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


def assert_untouched(before: dict[str, str], after: dict[str, str]) -> None:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not changed, f"files changed by a failed run: {changed}"
    assert sorted(after.keys() - before.keys()) == [], "a failed run wrote new files"
    assert sorted(before.keys() - after.keys()) == [], "a failed run deleted files"


#: Bad commands -> words the error must name (relative paths: in the workdir).
BAD = {
    "unknown_model_key": (
        fit("regular_ae", "--model.init_args.bogus_key", "3"), ["bogus_key", "not accepted"]),
    "unknown_trainer_key": (fit("regular_ae", "--trainer.bogus_key", "3"), ["trainer.bogus_key"]),
    "unknown_key_in_file": (fit("regular_ae", "--config", "typo.yaml"), ["trainer.max_epochz"]),
    "type:trainer.max_epochs": (
        fit("regular_ae", "--trainer.max_epochs", "abc"), ['"trainer.max_epochs"', "abc"]),
    "type:data.batch_size": (
        fit("regular_ae", "--data.batch_size", "many"), ['"data.batch_size"', "many"]),
    "type:seed_everything": (
        fit("regular_ae", "--seed_everything", "x1"), ['"seed_everything"', "x1"]),
    "unpool_nearest": (
        fit("regular_ae", "--model.init_args.unpool", "nearest"),
        ["model.init_args.unpool: 'nearest' is not allowed; allowed: 'switch', 'blind'"]),
    "missing_checkpoint": (
        fit("fixed_classifier", "--model.init_args.autoencoder_checkpoint", "/nope.ckpt"),
        ["autoencoder_checkpoint", "'/nope.ckpt'", "does not exist"]),
    "no_checkpoint": (fit("fixed_classifier"), ["needs autoencoder_checkpoint"]),
    # A file torch cannot load: named by key and path, not a bare unpickling error.
    "not_a_checkpoint": (
        fit("fixed_classifier", "--model.init_args.autoencoder_checkpoint", "not_a_ckpt.ckpt"),
        ["autoencoder_checkpoint", "not_a_ckpt.ckpt"]),
    "root_empty_dir": (fit("regular_ae", "--data.root", "empty_dir"),
                       ["empty_dir", "no utterances found"]),
    "root_missing": (fit("regular_ae", "--data.root", "/nonexistent/TIMIT"),
                     ["data.root '/nonexistent/TIMIT' does not exist"]),
    "root_is_a_file": (fit("regular_ae", "--data.root", "not_a_ckpt.ckpt"),
                       ["'not_a_ckpt.ckpt'", "not a folder"]),
    "missing_config": (["fit", "--config", "conf/nope.yaml"], ["conf/nope.yaml", "does not exist"]),
    "missing_preset": (
        fit("regular_ae", "--trainer.callbacks+=callbacks/nope.yaml"), ["callbacks/nope.yaml"]),
    # Callback presets on a model they do not fit (a mistake of the command, like the above).
    "misfit:reconstruction_logger": (
        fit("forward", f"--trainer.callbacks+={PRESETS / 'reconstruction_logger.yaml'}"),
        ["ReconstructionLogger", "ForwardClassifier"]),
    "misfit:tied_transpose_sync": (
        fit("forward", f"--trainer.callbacks+={PRESETS / 'tied_transpose_sync.yaml'}"),
        ["TiedTransposeSync", "ForwardClassifier"]),
    "misfit:second_stack_growth": (
        fit("weak_stack", f"--trainer.callbacks+={PRESETS / 'stack_growth.yaml'}"),
        ["StackGrowth"]),
    # No validation speakers and no other validation split: nothing to validate on.
    "val_fraction_0": (fit("regular_ae", "--data.val_fraction", "0"),
                       ["data.val_fraction 0", "data.val_split test"]),
    # Resuming never silently starts afresh.
    "resume_without_a_run": (fit("forward", "--ckpt_path", "last"),
                             ["--ckpt_path last", "runs/forward/version_*/checkpoints/last.ckpt"]),
    "ckpt_path_missing": (fit("regular_ae", "--ckpt_path", "nope.ckpt"),
                          ["ckpt_path 'nope.ckpt' does not exist"]),
    "run_dir_holds_a_run": (fit("regular_ae", "--run_dir", "runs/regular_ae/version_0"),
                            ["--run_dir", "already holds a run", "--ckpt_path last"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_fails_cleanly(name, template, tmp_path, monkeypatch, capsys, cli_cache):
    """Exit code 2, an ``error:`` line naming the fault, no file written, changed or deleted
    under the working directory (its finished runs included)."""
    args, words = BAD[name]
    cwd = tmp_path / "work"
    shutil.copytree(template, cwd, symlinks=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cli_cache))
    before = snapshot(cwd)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--trainer.logger", CSV_ONLY, *QUIET] if args[0] == "fit" else args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines[-20:]
    message = "\n".join(lines[lines.index(errors[0]) :])
    assert all(w in message for w in words), message[:2000]
    assert_untouched(before, snapshot(cwd))


def test_wrong_value_says_the_allowed_values_first(template, monkeypatch, capsys, cli_cache):
    """jsonargparse explains a wrong Literal inside 8-49 lines of union-type text; the first
    line of the error must name the key, the value and the allowed values."""
    monkeypatch.chdir(template)
    with pytest.raises(SystemExit):
        main(fit("regular_ae", "--model.init_args.unpool", "nearest"))
    error = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("error"))
    assert error == (
        "error: model.init_args.unpool: 'nearest' is not allowed; allowed: 'switch', 'blind' "
        "(or a list of them)"
    )


# --------------------------------------------------------------- the console script itself
@pytest.mark.slow
def test_console_script_reports_one_line_and_leaves_nothing(tmp_path, cli_cache):
    """An empty validation split fails before any run folder or W&B run exists."""
    run = run_cli("convae", fit("regular_ae", "--data.val_fraction", "0"), tmp_path, cli_cache)
    assert run.returncode == 2, run.explain()
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: data.val_fraction 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a folder was left behind"


@pytest.mark.slow
def test_validate_on_test_without_validation_speakers(tmp_path, cli_cache):
    """The thesis protocol: every TRAIN speaker trains, TEST validates."""
    args = fit("regular_ae", "--data.val_fraction", "0", "--data.val_split", "test", *QUIET)
    args += ["--trainer.logger", CSV_ONLY]
    run = run_cli("convae", args, tmp_path, cli_cache, "regular_ae")
    assert run.returncode == 0, run.explain()
    assert (run.run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_nan_loss_is_one_line_and_a_failed_status(tmp_path, cli_cache):
    args = fit(
        "regular_ae", *QUIET,
        "--model.init_args.optimizer.class_path", "torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr", "1e30",
    )  # fmt: skip
    run = run_cli("convae", args, tmp_path, cli_cache, "regular_ae")
    assert run.returncode == 2, run.explain()
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ConvAutoencoder: training loss is nan"), error
    status = json.loads((run.run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "training loss is nan" in status["error"]


# ------------------------------------------------------------------------- read-only folders
@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable for this process, root included (``chattr +i``; a plain
    ``chmod`` does not stop root)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        pytest.skip("root, and no chattr to make a folder immutable")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip(f"chattr +i is not supported on the filesystem of {folder}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


#: Read-only cases: extra arguments -> words of the one-line error (``ro``: the read-only folder).
READ_ONLY = {
    "run_dir": (["--run_dir", "ro/trial_0"], ["cannot create the run folder 'ro/trial_0'"]),
    "checkpoint_folder": (["--checkpoint.dirpath", "ro"],
                          ["cannot write the checkpoint folder", "ro'"]),
    "cache_folder": (["--data.cache_dir", "ro/cache"], ["cannot write 'ro/cache'"]),
    "resumed_checkpoints": (["--ckpt_path", "last"], ["cannot write the checkpoint folder",
                                                      "runs/regular_ae/version_0/checkpoints"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def read_only_runs(template, tmp_path_factory, cli_cache) -> dict:
    """Each read-only case as a console-script run (two at a time); ``resumed_checkpoints``
    makes the checkpoint folder of the existing run read-only and resumes it."""
    base = tmp_path_factory.mktemp("read_only")
    with contextlib.ExitStack() as stack:
        jobs = {}
        for name, (extra, _) in READ_ONLY.items():
            cwd = base / name
            shutil.copytree(template, cwd, symlinks=True)
            resumed = name == "resumed_checkpoints"
            target = cwd / ("runs/regular_ae/version_0/checkpoints" if resumed else "ro")
            stack.enter_context(read_only(target))
            jobs[name] = (cwd, snapshot(cwd), fit("regular_ae", *QUIET, *extra))
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(run_cli, "convae", args, cwd, cli_cache)
                       for name, (cwd, _, args) in jobs.items()}  # fmt: skip
            runs = {name: future.result() for name, future in futures.items()}
        return {name: (runs[name], jobs[name][1], snapshot(jobs[name][0])) for name in jobs}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_read_only_folder_fails_before_training(read_only_runs, name):
    """Lightning would train to the end with exit 0 and no checkpoint (its save swallows the
    PermissionError): the CLI checks every folder it must write first."""
    run, before, after = read_only_runs[name]
    assert run.returncode == 2, run.explain()
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and all(w in error for w in READ_ONLY[name][1]), error
    assert "Epoch 0" not in run.stdout + run.stderr, "training started"
    assert_untouched(before, after)
