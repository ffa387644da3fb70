"""Console entry points: ``convae data ...`` (corpus tools) and, later, LightningCLI runs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from jsonargparse import CLI


def _data_commands() -> dict[str, Callable]:
    from convae_lightning.data import commands

    components: dict[str, Callable] = {"stats": commands.stats, "prepare": commands.prepare}
    try:
        from convae_lightning.data.synth import synth_command
    except ImportError:  # the synthesiser is optional until its module lands
        pass
    else:
        components["synth"] = synth_command
    return components


def data_main(argv: Sequence[str] | None = None) -> None:
    """``convae data {stats,prepare,synth}``; ``stats``/``prepare`` take ROOT positionally too."""
    args = list(sys.argv[1:] if argv is None else argv)
    # jsonargparse has no optional positionals: `convae data stats ROOT` means `--root ROOT`.
    if len(args) >= 2 and args[0] in ("stats", "prepare") and not args[1].startswith("-"):
        args[1:2] = ["--root", args[1]]
    CLI(_data_commands(), args=args, prog="convae data")


def main(argv: Sequence[str] | None = None) -> None:
    """``convae``: ``convae data ...`` for corpus tools."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "data":
        data_main(args[1:])
        return
    print("usage: convae data {stats,prepare,synth} ...  (see convae data --help)", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
