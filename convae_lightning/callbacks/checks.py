"""The one check every callback of this package makes of its module before a run starts."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import MisconfigurationException

__all__ = ["require_module"]


def require_module(
    callback: str, pl_module: pl.LightningModule, needs: Sequence[str], hint: str
) -> None:
    """Fail early when ``pl_module`` lacks an attribute ``callback`` uses.

    Callbacks call this from ``check_module``, which the CLI runs before it creates a run folder
    and the callbacks run again in ``setup``.

    Raises:
        MisconfigurationException: naming the callback, what it needs, the module's class and
            ``hint`` (what to do instead).
    """
    missing = [name for name in needs if not hasattr(pl_module, name)]
    if missing:
        raise MisconfigurationException(
            f"{callback} needs a module with {', '.join(needs)}; {type(pl_module).__name__} "
            f"has no {', '.join(missing)}. {hint}"
        )
