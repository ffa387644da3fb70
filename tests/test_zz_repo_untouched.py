"""The test suite writes only under temporary folders: never into the clone's own ``runs/``.

Collected last (file name): the snapshot below is taken when pytest imports this module, before
any test runs, and compared after all others ran.
"""

from __future__ import annotations

from pathlib import Path

REPO_RUNS = Path(__file__).resolve().parents[1] / "runs"


def _snapshot() -> dict[str, int]:
    if not REPO_RUNS.exists():
        return {}
    return {str(p.relative_to(REPO_RUNS)): p.stat().st_mtime_ns for p in REPO_RUNS.rglob("*")}


BEFORE = _snapshot()


def test_suite_left_nothing_in_the_repository_runs_folder():
    after = _snapshot()
    new = sorted(after.keys() - BEFORE.keys())
    changed = sorted(k for k in BEFORE.keys() & after.keys() if BEFORE[k] != after[k])
    assert not new and not changed, f"tests wrote into {REPO_RUNS}: {(new + changed)[:10]}"
