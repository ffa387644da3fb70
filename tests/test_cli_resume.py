"""Killed runs resume to exactly the uninterrupted result, in their own run folder.

A weakly stacked autoencoder grows one unit per epoch for three epochs (``convae fit`` as a
subprocess). Each fault kills a copy of it with SIGKILL at one point (during a unit, right
after growth, while ``last.ckpt`` is written, right after it was written); ``convae fit
--ckpt_path last`` must then finish with the weights, optimiser state, callback states and
``metrics.csv`` of the uninterrupted run, in the same ``version_0`` folder.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import CONF, Run, assert_same, load_checkpoint, run_cli
from conftest import TINY

pytestmark = pytest.mark.slow

FIT = [
    "fit", "--config", str(CONF / "weak_stack.yaml"), *TINY,
    "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "1",
    "--progress_bar.refresh_rate", "0", "--trainer.enable_model_summary", "false",
    "--trainer.callbacks",
    "[{class_path: convae_lightning.callbacks.StackGrowth, init_args: {max_epochs_per_unit: 1}},"
    " {class_path: convae_lightning.callbacks.TiedTransposeSync}]",
]  # fmt: skip
#: CSV only (W&B's service costs seconds per process); one fault keeps W&B to check its run id.
CSV_ONLY = [
    "--trainer.logger",
    "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs}}]",
]
WITH_WANDB = "right_after_growth"

#: Where each run is killed: extra arguments for the killed run.
KILLS = {
    "during_unit_2": ["--trainer.callbacks+={class_path: fault_injection.KillAt, "
                      "init_args: {epoch: 1, when: batch, batch: 1}}"],
    "right_after_growth": ["--trainer.callbacks+={class_path: fault_injection.KillAt, "
                           "init_args: {epoch: 1, when: growth}}"],
    "while_writing_last_ckpt": ["--trainer.plugins={class_path: fault_injection.KillDuringSave, "
                                "init_args: {file: last.ckpt, nth: 2, when: mid_write}}"],
    "after_writing_last_ckpt": ["--trainer.plugins={class_path: fault_injection.KillDuringSave, "
                                "init_args: {file: last.ckpt, nth: 1, when: after_write}}"],
    "during_unit_3": ["--trainer.callbacks+={class_path: fault_injection.KillAt, "
                      "init_args: {epoch: 2, when: batch, batch: 0}}"],
}  # fmt: skip

#: $TMPDIR on another filesystem made Lightning's save copy the file into place.
TMPFS = {"TMPDIR": "/dev/shm"} if Path("/dev/shm").is_dir() else {}


def fit(name: str) -> list[str]:
    return FIT if name == WITH_WANDB else [*FIT, *CSV_ONLY]


def killed_then_resumed(name: str, base: Path, cache: Path) -> tuple[Run, dict, Run]:
    cwd = base / name
    killed = run_cli("convae", [*fit(name), *KILLS[name]], cwd, cache, "weak_stack", env=TMPFS)
    checkpoints = killed.run_dir / "checkpoints"
    last = checkpoints / "last.ckpt"
    after_kill = {
        "last": load_checkpoint(last) if last.exists() else None,
        "partial": sorted(p.name for p in checkpoints.glob(".*.tmp")),
    }
    args = [*fit(name), "--ckpt_path", "last"]
    resumed = run_cli("convae", args, cwd, cache, "weak_stack", env=TMPFS)
    return killed, after_kill, resumed


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, cli_cache) -> dict:
    """The uninterrupted run and every killed-and-resumed one, two at a time (2 cores)."""
    base = tmp_path_factory.mktemp("resume")
    with ThreadPoolExecutor(max_workers=2) as pool:
        reference = pool.submit(
            run_cli, "convae", FIT, base / "uninterrupted", cli_cache, "weak_stack"
        )
        futures = {name: pool.submit(killed_then_resumed, name, base, cli_cache) for name in KILLS}
        return {"uninterrupted": reference.result()} | {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("kill", sorted(KILLS))
def test_resume_after_sigkill_equals_the_uninterrupted_run(outcomes, kill):
    reference = outcomes["uninterrupted"]
    killed, _, resumed = outcomes[kill]
    assert reference.returncode == 0, reference.explain()
    assert killed.returncode == -9, killed.explain()
    assert resumed.returncode == 0, resumed.explain()
    # The same run folder, continued: no second version (and the same W&B run id).
    assert sorted(p.name for p in (resumed.cwd / "runs" / "weak_stack").iterdir()) == ["version_0"]
    if kill == WITH_WANDB:
        wandb = resumed.run_dir / "wandb"
        ids = {p.name.rsplit("-", 1)[1] for p in wandb.glob("offline-run-*")}
        assert len(ids) == 1 and len(list(wandb.glob("offline-run-*"))) == 2, ids

    want = load_checkpoint(reference.run_dir / "checkpoints" / "last.ckpt")
    got = load_checkpoint(resumed.run_dir / "checkpoints" / "last.ckpt")
    assert (got["epoch"], got["global_step"]) == (want["epoch"], want["global_step"])
    # Three epochs, one per unit: units 1-3 trained; the 4th would be added at epoch 3's start.
    assert got["convae"]["num_active_units"] == want["convae"]["num_active_units"] == 3
    assert_same(got["state_dict"], want["state_dict"], "state_dict")
    assert_same(got["optimizer_states"], want["optimizer_states"], "optimizer_states")
    for key, state in want["callbacks"].items():
        if not key.startswith("ModelCheckpoint"):  # they hold their own absolute paths
            assert_same(got["callbacks"][key], state, key)
    metrics = "metrics.csv"
    assert (resumed.run_dir / metrics).read_text() == (reference.run_dir / metrics).read_text()


def test_a_kill_while_writing_keeps_the_previous_last_checkpoint(outcomes):
    """The write was cut halfway (a partial temporary file is left), and ``last.ckpt`` is still
    the whole checkpoint of the epoch before."""
    _, after_kill, resumed = outcomes["while_writing_last_ckpt"]
    assert after_kill["partial"], "the kill did not happen during a write"
    assert after_kill["last"] is not None and after_kill["last"]["epoch"] == 0
    # The resumed run cleaned up the dead process's partial file.
    assert not list((resumed.run_dir / "checkpoints").glob(".*.tmp"))


def test_resumed_run_records_its_status(outcomes):
    import json

    _, _, resumed = outcomes["right_after_growth"]
    status = json.loads((resumed.run_dir / "status.json").read_text())
    assert status["status"] == "finished"
    assert status["resumed_from"].endswith("runs/weak_stack/version_0/checkpoints/last.ckpt")
