"""Comparison reports of runs and Optuna studies (``convae report``); see ``docs/reports.md``.

Importing this package is cheap: the command and its dependencies load on first use, so the
callbacks can use :mod:`convae_lightning.report.figures` without pulling in Optuna.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["build_report", "main"]


def build_report(*args: Any, **kwargs: Any) -> Any:
    """See :func:`convae_lightning.report.command.build_report`."""
    from convae_lightning.report.command import build_report as build

    return build(*args, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    """``convae report ...``; see :func:`convae_lightning.report.command.main`."""
    from convae_lightning.report.command import main as run

    run(argv)
