"""Reading one run at one depth: metric series, best and final values, epochs, condition keys.

A stacked autoencoder's run holds results for every depth it reached: its ordinary keys over the
epochs trained at depth ``k`` (the model logs its depth, ``stack/active_units``, every epoch), and
StackGrowth's record of each depth's best epoch, ``{stage}_unit{k}/...``
(:func:`~convae_lightning.runs.unit_stage`), used where the depths per epoch are not logged. A
:class:`RunView` is a run seen at one depth (or as a whole), so a table can put depth (``units``)
on an axis like the thesis's Table 4.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from convae_lightning.report.sources import RunEntry
from convae_lightning.runs import parse_metric_key, unit_stage

__all__ = [
    "ACTIVE_UNITS_KEY",
    "PSEUDO_KEYS",
    "Field",
    "RunView",
    "canonical",
    "format_value",
    "run_views",
]

#: Metric a stacked autoencoder logs with its depth (number of active units) every epoch.
ACTIVE_UNITS_KEY = "stack/active_units"
#: Keys a table can be laid out by besides config keys: depth, base config name, seed.
PSEUDO_KEYS: dict[str, str] = {
    "units": "depth: a stacked run's per-depth results, else model.init_args.num_units",
    "config": "the base config's name (a sweep's `config` parameter, else runs/<name>/)",
    "seed": "the run's seed (trial attribute `seed`, else seed_everything)",
}
#: Metric names where higher is better; every other metric is an error (lower is better).
HIGHER_IS_BETTER: tuple[str, ...] = ("acc", "cosine", "corr")
_UNIT_KEY = re.compile(r"^[a-z]+_unit(\d+)/")


@dataclass(frozen=True)
class Field:
    """One line of a table cell: a metric's best or final value, epochs trained or wall time.

    Spelled ``KEY[:best|:final]`` (``val/euclid_balanced:best``; ``final`` when left out),
    ``epochs`` or ``wall_time``; reference tables name their columns the same way.
    """

    spec: str
    key: str | None = None
    agg: Literal["best", "final"] | None = None

    @classmethod
    def parse(cls, spec: str) -> Field:
        """Raises ValueError naming ``spec`` and the allowed forms."""
        spec = spec.strip()
        if spec in ("epochs", "wall_time"):
            return cls(spec)
        key, _, agg = spec.partition(":")
        agg = agg or "final"
        try:
            parse_metric_key(key)
        except ValueError:
            key = ""
        if not key or agg not in ("best", "final"):
            raise ValueError(
                f"field {spec!r}: expected 'epochs', 'wall_time' or a metric key with an optional "
                "':best'/':final', e.g. 'val/euclid_balanced:best' or 'test/euclid_balanced'"
            )
        return cls(f"{key}:{agg}", key, agg)  # type: ignore[arg-type]

    @property
    def metric(self) -> str | None:
        return None if self.key is None else parse_metric_key(self.key)[1]

    @property
    def mode(self) -> Literal["min", "max"]:
        name = self.metric or ""
        return "max" if name.startswith(HIGHER_IS_BETTER) else "min"

    def label(self, with_metric: bool = False) -> str:
        """Short text for a cell line: ``val bal best``, ``test nat``, ``epochs``."""
        if self.key is None:
            return "wall time" if self.spec == "wall_time" else "epochs"
        stage, name, view = parse_metric_key(self.key)
        parts = [stage.replace("_unit", " unit ")]
        if with_metric:
            parts.append(name)
        if view is not None:
            parts.append(view[:3])
        if stage.startswith(("train", "val")):
            parts.append(self.agg or "final")
        return " ".join(parts)


@dataclass
class RunView:
    """A run seen at one depth (``depth=None``: the run as a whole)."""

    entry: RunEntry
    depth: int | None = None
    _keys: set[str] = field(default_factory=set, init=False, repr=False)
    _epoch_depth: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._keys = set(self.entry.record.metric_keys)
        self._epoch_depth = epoch_depths(self.entry)

    @property
    def path(self) -> Path:
        return self.entry.path

    def resolve(self, key: str) -> str | None:
        """The logged spelling of ``key`` (Lightning appends ``_epoch`` to step+epoch logs)."""
        for candidate in (key, f"{key}_epoch"):
            if candidate in self._keys:
                return candidate
        return None

    def series(self, key: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of ``key`` at this view's depth.

        At a depth, the run's own series over the epochs trained at that depth when the run
        logged its depth per epoch (best and final both exist there); otherwise StackGrowth's
        ``{stage}_unit{k}/...`` record of the depth's best epoch.
        """
        record = self.entry.record
        evaluated = self._evaluated(key)
        if evaluated is not None:
            return [(-1, evaluated)]
        resolved = self.resolve(key)
        values = record.series(resolved) if resolved is not None else []
        if self.depth is None:
            return values
        if self._epoch_depth:
            return [(e, v) for e, v in values if self._epoch_depth.get(e) == self.depth]
        stage, _, rest = key.partition("/")
        per_depth = self.resolve(f"{unit_stage(stage, self.depth)}/{rest}")
        if per_depth is not None and "_unit" not in stage:
            return record.series(per_depth)
        return values if self.depth == final_depth(self.entry) else []

    def _evaluated(self, key: str) -> float | None:
        """``key`` from the run's latest ``convae test`` (``test_metrics.csv``) of a checkpoint
        at this view's depth (any checkpoint for the whole run), or ``None``."""
        if key.partition("/")[0] != "test":
            return None  # validation curves are the fit's own; `convae validate` is a re-check
        rows = self.entry.record.evaluations.get("test", [])
        if self.depth is not None:
            rows = [r for r in rows if self._checkpoint_depth(r.get("checkpoint")) == self.depth]
        values = [r[key] for r in rows if isinstance(r.get(key), float) and math.isfinite(r[key])]
        return values[-1] if values else None

    def _checkpoint_depth(self, name: Any) -> int | None:
        """Active units of an evaluated checkpoint: its own metadata, else ``unit{k}.ckpt``,
        else the depth its epoch (``epoch=N-...``) was trained at, else the run's final depth:
        a regular autoencoder's checkpoints all have its ``num_units``, and a copied study
        (docs/results) keeps ``test_metrics.csv`` but not the checkpoints."""
        stem = Path(str(name)).stem if name else ""
        info = self.entry.record.checkpoints.get(stem)
        if info is not None and info.active_units:
            return int(info.active_units)
        if match := re.fullmatch(r"unit(\d+)", stem):
            return int(match[1])
        if (match := re.match(r"epoch=(\d+)", stem)) and self._epoch_depth:
            return self._epoch_depth.get(int(match[1]))
        return final_depth(self.entry)

    def value(self, item: Field) -> float | None:
        """The field's value for this view, ``None`` when the run did not log it."""
        if item.spec == "epochs":
            return self.epochs
        if item.spec == "wall_time":
            return self.wall_time_s
        assert item.key is not None
        values = [v for _, v in self.series(item.key)]
        if not values:
            return None
        if item.agg == "final":
            return values[-1]
        return min(values) if item.mode == "min" else max(values)

    @property
    def epochs(self) -> float | None:
        """Epochs trained (at a depth: epochs spent with this many active units, the thesis's
        ``n``, from the logged depths or StackGrowth's ``val_unit{k}/epochs``)."""
        record = self.entry.record
        if self.depth is not None and self._epoch_depth:
            return float(sum(1 for d in self._epoch_depth.values() if d == self.depth))
        if self.depth is not None:
            logged = record.final(f"{unit_stage('val', self.depth)}/epochs")
            if logged is not None:
                return logged
            if self.depth != final_depth(self.entry):
                return None
        return float(record.epochs_trained) if record.rows else None

    @property
    def wall_time_s(self) -> float | None:
        """The run's wall time; at a depth short of the run's last one it is not known."""
        if self.depth is not None and self.depth != final_depth(self.entry):
            return None
        return self.entry.wall_time_s

    def key_value(self, key: str) -> Any:
        """The value of a layout key (a config key or a pseudo-key) for this view."""
        entry = self.entry
        params = entry.trial.params if entry.trial is not None else {}
        if key == "units":
            return self.depth
        if key == "seed":
            return entry.seed
        if key == "config":
            if "config" in params:
                return config_name(params["config"])
            return entry.record.name
        if key in params:
            return params[key]
        return entry.record.config_value(key)


def config_name(value: Any) -> str:
    """``conf/weak_stack.yaml`` -> ``weak_stack``; overlays joined with ``+``."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return "+".join(Path(str(v)).stem for v in items)


def epoch_depths(entry: RunEntry) -> dict[int, int]:
    """Epoch -> active units, from the ``stack/active_units`` metric (empty when not logged)."""
    return {epoch: int(value) for epoch, value in entry.record.series(ACTIVE_UNITS_KEY)}


def final_depth(entry: RunEntry) -> int | None:
    """The deepest depth a run reached: logged, in its last checkpoint, or configured."""
    depths = set(epoch_depths(entry).values())
    if depths:
        return max(depths)
    last = entry.record.checkpoints.get("last")
    if last is not None and last.active_units:
        return int(last.active_units)
    configured = entry.record.config_value("model.init_args.num_units")
    return int(configured) if isinstance(configured, int) else None


def run_depths(entry: RunEntry) -> list[int | None]:
    """Depths a run has results for (per-depth keys, logged depths, or its final depth)."""
    depths = {int(m[1]) for key in entry.record.metric_keys if (m := _UNIT_KEY.match(key))}
    depths |= set(epoch_depths(entry).values())
    if not depths:
        return [final_depth(entry)]
    return sorted(depths)


def run_views(entries: Sequence[RunEntry], per_depth: bool) -> list[RunView]:
    """One view per run, or one per run and depth when the layout has ``units``."""
    if not per_depth:
        return [RunView(entry) for entry in entries]
    return [RunView(entry, depth) for entry in entries for depth in run_depths(entry)]


# ------------------------------------------------------------------------------- values
def canonical(value: Any) -> str:
    """A grouping key for a value: ``True`` and ``1``, ``1`` and ``1.0`` compare as YAML does."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=str)


def format_value(value: Any, width: int = 40) -> str:
    """A key value for display: ``true``, ``switch``, ``0.001``, compact JSON for lists."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        text = value
    elif isinstance(value, int):
        text = str(value)
    else:
        text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"
