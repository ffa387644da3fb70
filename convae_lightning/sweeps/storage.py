"""Where a study lives: SQLite by default, a journal file for local workers, any RDB URL.

- one worker, no ``--storage``: ``runs/<study>/study.db`` (SQLite);
- ``--workers N``: ``runs/<study>/journal.log`` (Optuna's ``JournalStorage``; SQLite with
  several writer processes risks "database is locked");
- an RDB URL (``postgresql+psycopg2://user@host/db``): workers on several machines. RDB
  storages get Optuna's heartbeat, so a trial whose machine died is failed and retried.

Enqueuing the grid must not race between processes that start at once: :func:`planning_lock`
serialises it (a file lock next to a SQLite or journal file, a PostgreSQL advisory lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from convae_lightning.sweeps.spec import HeartbeatSpec

__all__ = [
    "StorageError",
    "default_storage",
    "display_url",
    "is_rdb",
    "open_storage",
    "planning_lock",
    "sqlite_path",
]

#: Folder of runs (the CSV logger's default ``save_dir``).
RUNS_ROOT = Path("runs")
SQLITE_NAME = "study.db"
JOURNAL_NAME = "journal.log"


class StorageError(RuntimeError):
    """The storage cannot be used: one line naming it and what to do."""


def is_rdb(url: str) -> bool:
    """An SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``); anything else is a journal."""
    return "://" in url


def sqlite_path(url: str) -> Path | None:
    return Path(url.split(":///", 1)[1]) if url.startswith("sqlite:///") else None


def default_storage(study_name: str, workers: int) -> str:
    """``runs/<study>/study.db`` for one worker, ``runs/<study>/journal.log`` for several.

    A study already in one of them stays there (a journal serves one worker as well; an existing
    SQLite study cannot take several workers safely).

    Raises:
        StorageError: ``workers > 1`` for a study that already lives in SQLite.
    """
    folder = RUNS_ROOT / study_name
    sqlite, journal = folder / SQLITE_NAME, folder / JOURNAL_NAME
    if journal.exists() or (workers > 1 and not sqlite.exists()):
        return str(journal)
    if workers > 1:
        raise StorageError(
            f"study {study_name!r} lives in {sqlite}, which is not safe for several worker "
            "processes; run it with --workers 1, or give --storage an RDB server URL "
            "(postgresql+psycopg2://...) for a new study"
        )
    return f"sqlite:///{sqlite}"


def display_url(url: str) -> str:
    """The URL without its password."""
    if not is_rdb(url):
        return url
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: shown as given, the open fails anyway
        return url


def open_storage(
    url: str,
    heartbeat: HeartbeatSpec | None = None,
    on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> BaseStorage:
    """Open (and create where needed) the storage at ``url``, checking it can be reached.

    Args:
        url: An RDB URL or a journal file path.
        heartbeat: Heartbeat settings for RDB storages (``None``: no heartbeat).
        on_stale: Called for each trial failed because its heartbeat went stale.

    Raises:
        StorageError: the server is unreachable, the driver is missing, the URL is malformed.
    """
    shown = display_url(url)
    if not is_rdb(url):
        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Absolute: Optuna's lock is a symlink to this path, resolved from the link's own
            # folder; a relative target dangles, and then a lock left by a killed worker is
            # never released after its grace period.
            return JournalStorage(JournalFileBackend(str(path.resolve())))
        except OSError as error:
            raise StorageError(f"storage {shown}: cannot open the journal file: {error}") from None
    sqlite = sqlite_path(url)
    if sqlite is not None and str(sqlite) not in ("", ":memory:"):
        sqlite.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # An unreachable host must fail in seconds, not after the OS's TCP timeout.
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 10}}
    if heartbeat is not None:
        kwargs.update(
            heartbeat_interval=heartbeat.interval,
            grace_period=heartbeat.grace_period,
            heartbeat_stale_trial_callback=on_stale,
        )
    try:
        return _open_rdb(url, kwargs)
    except ModuleNotFoundError as error:
        hint = " (pip install psycopg2-binary)" if "psycopg" in str(error) else ""
        raise StorageError(f"storage {shown}: driver missing: {error}{hint}") from None
    except Exception as error:  # SQLAlchemy's errors (connection, URL, dialect) and Optuna's
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        raise StorageError(f"storage {shown}: cannot connect: {reason[:300]}") from None


def _open_rdb(url: str, kwargs: dict[str, Any], attempts: int = 5) -> RDBStorage:
    """``RDBStorage(url)``, again when another process created the tables at the same moment.

    Two machines starting on an empty PostgreSQL database both create Optuna's schema; one
    of them fails on a duplicate type or table ("already exists"), and then finds it made.
    """
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def planning_lock(url: str, study_name: str) -> Iterator[None]:
    """Hold an exclusive lock for ``study_name`` while a process plans (enqueues) runs.

    A file lock beside a journal or SQLite file (released by the OS when the holder dies), a
    session-level advisory lock on PostgreSQL (released when its connection drops). Other
    servers get no lock: start their first worker alone, the rest once it has planned.
    """
    path = Path(url) if not is_rdb(url) else sqlite_path(url)
    if path is not None:
        lock = path.with_name(f".{path.name}.plan.lock")
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return
    yield
