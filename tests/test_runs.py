"""The run contract (``convae_lightning.runs``): layout helpers, status, and ``RunRecord`` read
back from real run folders written by the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import CONF, STACK_CALLBACKS
from conftest import TINY

from convae_lightning.runs import (
    RunRecord,
    best_key,
    checkpoint_run_dir,
    claim_version_dir,
    find_runs,
    latest_checkpoint,
    latest_run,
    metric_key,
    next_version_dir,
    parse_metric_key,
    read_status,
    unit_stage,
    write_status,
)

#: In-process runs: CSV only (no W&B service), no progress bar.
CSV_ONLY = "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs}}]"
QUIET = [
    "--trainer.logger", CSV_ONLY,
    "--progress_bar.refresh_rate", "0", "--trainer.enable_model_summary", "false",
]  # fmt: skip


def cli(*args: str) -> object:
    from convae_lightning.cli import ConvaeCLI

    return ConvaeCLI(args=list(args))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cli_cache) -> Path:
    """Real run folders written in-process by the CLI: a 3-epoch forward run, tested and
    validated from its checkpoints, and a stacked run growing one unit per epoch."""
    cwd = tmp_path_factory.mktemp("records")
    before = Path.cwd()
    saved_cache = os.environ.get("CONVAE_CACHE_DIR")
    os.environ["CONVAE_CACHE_DIR"] = str(cli_cache)
    os.chdir(cwd)
    try:
        forward = ["--config", str(CONF / "forward.yaml"), *TINY, *QUIET]
        cli("fit", *forward, "--trainer.max_epochs", "3")
        cli("test", *forward, "--ckpt_path", "last")
        cli("validate", *forward, "--ckpt_path", "runs/forward/version_0/checkpoints/last.ckpt")
        stacked = ["--config", str(CONF / "weak_stack.yaml"), *TINY, *QUIET, *STACK_CALLBACKS]
        cli("fit", *stacked, "--trainer.max_epochs", "3")
    finally:
        os.chdir(before)
        if saved_cache is None:
            os.environ.pop("CONVAE_CACHE_DIR", None)
        else:
            os.environ["CONVAE_CACHE_DIR"] = saved_cache
    return cwd


# ---------------------------------------------------------------------------- metric keys
@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("val/euclid_balanced", ("val", "euclid", "balanced")),
        ("train/loss", ("train", "loss", None)),
        ("val/acc48_natural_best", ("val", "acc48", "natural")),
        ("train/loss_epoch", ("train", "loss", None)),
        ("val_unit2/euclid_balanced", ("val_unit2", "euclid", "balanced")),
    ],
)
def test_metric_keys_round_trip(key, parts):
    assert parse_metric_key(key) == parts


def test_metric_key_spellings():
    assert metric_key("val", "euclid", "balanced") == "val/euclid_balanced"
    assert metric_key("train", "loss") == "train/loss"
    assert best_key("val/euclid_balanced") == "val/euclid_balanced_best"
    assert unit_stage("val", 2) == "val_unit2"
    with pytest.raises(ValueError, match="stage/name"):
        parse_metric_key("no_slash")


# -------------------------------------------------------------------------------- layout
def test_version_folders(tmp_path):
    assert next_version_dir(tmp_path, "x") == tmp_path / "x" / "version_0"
    assert latest_run(tmp_path, "x") is None
    for name in ("version_0", "version_2", "version_10", "version_x", "trial_3"):
        (tmp_path / "x" / name).mkdir(parents=True)
    assert next_version_dir(tmp_path, "x") == tmp_path / "x" / "version_11"
    assert latest_run(tmp_path, "x") == tmp_path / "x" / "version_10"
    assert latest_run(tmp_path, "x", prefix="trial") == tmp_path / "x" / "trial_3"


def test_concurrent_claims_get_distinct_folders(tmp_path):
    with ThreadPoolExecutor(max_workers=8) as pool:
        claimed = list(pool.map(lambda _: claim_version_dir(tmp_path, "x"), range(16)))
    assert sorted(p.name for p in claimed) == sorted(f"version_{i}" for i in range(16))


def test_latest_checkpoint_skips_runs_without_one(tmp_path):
    for version, has_last in ((0, True), (1, True), (2, False)):
        checkpoints = tmp_path / "x" / f"version_{version}" / "checkpoints"
        checkpoints.mkdir(parents=True)
        if has_last:
            (checkpoints / "last.ckpt").write_bytes(b"")
    assert latest_checkpoint(tmp_path, "x") == tmp_path / "x/version_1/checkpoints/last.ckpt"
    assert latest_checkpoint(tmp_path, "y") is None


def test_checkpoint_run_dir(tmp_path):
    run = tmp_path / "runs" / "x" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    assert checkpoint_run_dir(run / "checkpoints" / "last.ckpt") is None  # not a run yet
    (run / "config.yaml").write_text("{}")
    assert checkpoint_run_dir(run / "checkpoints" / "last.ckpt") == run
    assert checkpoint_run_dir(tmp_path / "model.ckpt") is None


@pytest.mark.slow
def test_find_runs(workdir):
    runs = workdir / "runs"
    expected = [runs / "forward" / "version_0", runs / "weak_stack" / "version_0"]
    assert find_runs([runs / "*" / "version_*"]) == [p.resolve() for p in expected]
    assert find_runs([runs / "forward"]) == [expected[0].resolve()]
    assert find_runs([runs / "nothing_here"]) == []


# -------------------------------------------------------------------------------- status
def test_status_keeps_earlier_fields(tmp_path):
    write_status(tmp_path, "running", pid=1, started=5.0)
    write_status(tmp_path, "finished", wall_time_s=2.0)
    status = read_status(tmp_path)
    assert status["status"] == "finished"
    assert (status["pid"], status["started"], status["wall_time_s"]) == (1, 5.0, 2.0)
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / "status.json").write_text("{not json")
    assert read_status(tmp_path) is None


def test_a_running_run_whose_process_died_reads_as_interrupted(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    write_status(tmp_path, "running", pid=int(gone.stdout), host=os.uname().nodename)
    assert RunRecord.load(tmp_path).status == "interrupted"
    write_status(tmp_path, "running", pid=os.getpid())
    assert RunRecord.load(tmp_path).status == "running"


# -------------------------------------------------------------------------------- records
@pytest.mark.slow
def test_record_of_a_cli_run(workdir):
    record = RunRecord.load(workdir / "runs" / "forward" / "version_0")
    assert record.problems == []
    assert (record.name, record.version) == ("forward", "version_0")
    assert record.config_value("model.class_path") == "convae_lightning.models.ForwardClassifier"
    assert record.config_value("data.train_per_class") == 5
    assert record.config_value("ckpt_path") is None  # config.yaml reruns as a new run
    assert record.status == "finished" and record.wall_time_s > 0
    assert record.epochs_trained == 3
    accuracy = record.series("val/acc48_balanced")
    assert [epoch for epoch, _ in accuracy] == [0, 1, 2]
    assert record.final("val/acc48_balanced") == accuracy[-1][1]
    assert record.best("val/acc48_balanced", "max") == max(v for _, v in accuracy)
    # The CLI logs the best value so far of the checkpoint's monitored metric (mode max).
    best_so_far = [v for _, v in record.series(best_key("val/acc48_balanced"))]
    assert best_so_far == [max(v for _, v in accuracy[: i + 1]) for i in range(3)]
    last = record.checkpoints["last"]
    assert (last.epoch, last.global_step, last.kind) == (2, 6, "forward_classifier")
    assert len(record.checkpoints) == 2  # last and the best by val/acc48_balanced


@pytest.mark.slow
def test_record_reads_evaluations_from_checkpoints(workdir):
    record = RunRecord.load(workdir / "runs" / "forward" / "version_0")
    test = record.evaluation("test")
    assert test["checkpoint"] == "last.ckpt"
    assert 0.0 <= test["test/acc48_natural"] <= 1.0
    assert record.evaluation("test", checkpoint="last") == test
    assert record.evaluation("test", checkpoint="epoch=0-step=2") == {}
    validate = record.evaluation("validate", "last.ckpt")
    assert validate["val/acc48_balanced"] == pytest.approx(record.final("val/acc48_balanced"))
    # Evaluations do not change the fit's metrics, config or status.
    assert "test/acc48_natural" not in record.metric_keys
    assert (record.path / "test_config.yaml").is_file()


@pytest.mark.slow
def test_record_of_a_stacked_run(workdir):
    record = RunRecord.load(workdir / "runs" / "weak_stack" / "version_0")
    # One unit per epoch for 3 epochs: the 4th unit would be added when a 4th epoch starts.
    assert record.checkpoints["last"].active_units == 3
    assert record.checkpoints["last"].kind == "stacked_autoencoder"
    # One unit per epoch: the best so far restarts with every depth.
    values = [v for _, v in record.series("val/euclid_balanced")]
    assert [v for _, v in record.series("val/euclid_balanced_best")] == values


@pytest.mark.slow
def test_record_of_a_broken_run_reports_instead_of_raising(workdir, tmp_path):
    broken = tmp_path / "version_0"
    shutil.copytree(workdir / "runs" / "forward" / "version_0", broken)
    (broken / "metrics.csv").unlink()
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
    record = RunRecord.load(broken)
    assert "metrics.csv missing" in record.problems
    assert any(p.startswith("checkpoints/last.ckpt unreadable: ") for p in record.problems)
    assert record.rows == [] and record.epochs_trained == 0 and record.final("x/y") is None
    missing = tmp_path / "nope"
    assert RunRecord.load(missing).problems == [f"{missing}: no such run folder"]
    assert json.loads((broken / "status.json").read_text())["status"] == "finished"
