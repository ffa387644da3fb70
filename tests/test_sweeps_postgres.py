"""Sweeps on PostgreSQL, the storage for workers on several machines: a throwaway server started
by the test run itself (``initdb``/``pg_ctl`` from Debian's ``postgresql`` package, as the
``postgres`` user when the tests run as root).

Where no server can be started the tests skip with the reason, except where
``CONVAE_REQUIRE_POSTGRES=1`` (CI sets it): then they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env
from sweep_helpers import (
    REPO,
    complete_keys,
    load,
    silent_remote_trial_is_retried,
    two_workers_share_a_grid,
    write_spec,
)


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server in a temporary folder for this module; its SQLAlchemy URL."""

    def unavailable(reason: str) -> None:
        if os.environ.get("CONVAE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"CONVAE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)

    bindir = _pg_bindir()
    if bindir is None:
        unavailable("no PostgreSQL server (apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("no psycopg2 driver (pip install psycopg2-binary)")
    folder = Path(tempfile.mkdtemp(prefix="convae-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to run the server")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    commands = [
        [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
         "-w", "start"],
    ]  # fmt: skip
    for command in commands:
        result = subprocess.run([*run_as, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            unavailable(f"cannot start PostgreSQL: {(result.stderr or result.stdout).strip()}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run([*run_as, *stop], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch, cli_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cli_cache))
    return tmp_path


def test_two_processes_on_postgres_share_one_grid(workdir, postgres_url):
    two_workers_share_a_grid(workdir, postgres_url, "shared")


def test_postgres_heartbeat_fails_and_retries_a_silent_remote_trial(workdir, postgres_url):
    silent_remote_trial_is_retried(workdir, postgres_url, "beats")


@pytest.mark.slow
def test_the_same_command_on_another_machine_joins_the_study(tmp_path, postgres_url, cli_cache):
    """The same sweep command started in two places at once, with ``--storage
    postgresql://...``: ``convae sweep`` on one, ``python -m convae_lightning.sweeps`` (the
    same command; local ``--workers`` start it so) on the other."""
    space = {"model.init_args.unpool": ["switch", "blind"],
             "model.init_args.decoder_relu": [True, False]}  # fmt: skip
    spec = write_spec(tmp_path, "joined", space=space)
    env = {**cli_env(cli_cache), "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    machines = [tmp_path / "machine_a", tmp_path / "machine_b"]
    commands = [
        [str(Path(sys.executable).parent / "convae"), "sweep"],
        [sys.executable, "-m", "convae_lightning.sweeps"],
    ]
    processes = []
    for machine, command in zip(machines, commands, strict=True):
        machine.mkdir()
        processes.append(
            subprocess.Popen(
                [*command, str(spec), "--storage", postgres_url], cwd=machine, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        )  # fmt: skip
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
    study = load(postgres_url, "joined")
    assert len(complete_keys(study)) == 4 and len(set(complete_keys(study))) == 4
    assert len(study.trials) == 4
    for trial in study.trials:
        # Each trial's run folder is on the machine that ran it, relative to its command.
        homes = [m for m in machines if (m / trial.user_attrs["run_dir"] / "metrics.csv").is_file()]
        assert len(homes) == 1
        assert trial.user_attrs["run_dir_abs"] == str(homes[0] / trial.user_attrs["run_dir"])
