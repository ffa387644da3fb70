"""``python -m convae_lightning.synth OUT --speakers N ...`` is ``convae data synth OUT ...``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``convae data synth`` (same parser, same one-line errors) with ``argv``."""
    from convae_lightning.cli import data_main

    data_main(["synth", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
