"""Figures a person can read: labelled spectrograms, learning curves and a study's Optuna plots.

Built on ``matplotlib.figure.Figure`` (no pyplot state, so callbacks and reports can draw from
any thread or process); :func:`save_png` writes a figure atomically. ``ReconstructionLogger`` and
``convae report`` share :func:`spectrogram_figure`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convae_lightning.data.features import FeatureConfig

__all__ = [
    "learning_curves_figure",
    "reconstruction_errors",
    "save_png",
    "spectrogram_figure",
    "study_figures",
]

#: Real-part colour limits clip the top 1% of |values|: a few harmonics' peaks would otherwise
#: set the scale and leave the rest of the patch white.
REAL_PART_PERCENTILE = 99.0


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 3 else x  # (N, F, T) -> (N, 1, F, T)


def reconstruction_errors(rows: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per example, the Euclidean distance of each row to the first (the input), as the models'
    ``euclid`` measure computes it on the same (mean-subtracted) patches."""
    arrays = {name: _array(x) for name, x in rows.items()}
    reference = next(iter(arrays.values()))
    flat = reference.reshape(len(reference), -1)
    return {
        name: np.linalg.norm(x.reshape(len(x), -1) - flat, axis=1) for name, x in arrays.items()
    }


def _log_magnitude(patch: np.ndarray, representation: str) -> np.ndarray | None:
    """Channel-0 spectrum in dB (``patch`` with the mean added back), ``None`` for MFCCs."""
    if representation == "mfcc":
        return None
    if representation == "log_mel":
        return patch[0]  # already dB
    magnitude = np.hypot(patch[0], patch[1]) if representation == "real_imag" else np.abs(patch[0])
    return 20 * np.log10(magnitude + 1e-8)


def spectrogram_figure(
    rows: Mapping[str, Any],
    titles: Sequence[str] | None = None,
    title: str = "",
    *,
    features: FeatureConfig | None = None,
    mean: Any = None,
    units: int | None = None,
    dynamic_range_db: float = 60.0,
) -> Figure:
    """Spectrogram patches side by side: one row per example, the real part of each kind (input,
    reconstruction, ...) then its log magnitude, with time (ms) and frequency (Hz) axes and a
    colour bar per example.

    Args:
        rows: Kind name -> patches ``(N, C, F, T)`` or ``(N, F, T)``, mean-subtracted as the model
            sees them; the first kind is the input the others are compared with.
        titles: Title of each example, e.g. its phone (``/aa/``).
        title: Figure title (e.g. ``epoch 12``); the depth and the error measure are appended.
        features: The feature settings (axes in ms and Hz); default: the thesis's.
        mean: The training mean spectrogram, added back for the log-magnitude view.
        units: Depth of the autoencoder (active units), shown in the title.
        dynamic_range_db: Range of the log-magnitude colour scale below each example's peak.
    """
    features = features or FeatureConfig()
    arrays = {name: _array(x) for name, x in rows.items()}
    kinds = list(arrays)
    errors = reconstruction_errors(arrays)
    count = len(arrays[kinds[0]])
    mean_array = None if mean is None else _array(np.asarray(mean)[None])[0]
    log_views = features.representation != "mfcc"
    groups = 2 if log_views else 1
    bins = arrays[kinds[0]].shape[-2]
    duration_ms = 1000 * features.segment_length(arrays[kinds[0]].shape[-1]) / features.sample_rate
    if features.representation in ("log_mel", "mfcc"):
        extent = (0.0, duration_ms, 0.0, float(bins))
        y_label = "mel band" if features.representation == "log_mel" else "coefficient"
    else:
        extent = (0.0, duration_ms, 0.0, features.sample_rate / 2)
        y_label = "frequency (Hz)"

    n_cols = groups * len(kinds)
    figure = Figure(figsize=(2.3 * n_cols + 1.6 * groups, 2.0 * count + 0.8), layout="constrained")
    axes = figure.subplots(count, n_cols, squeeze=False, sharex=True, sharey=True)
    for r in range(count):
        label = f"{titles[r]} " if titles is not None and r < len(titles) else ""
        base = arrays[kinds[0]][r]
        limit = float(np.percentile(np.abs(base[0]), REAL_PART_PERCENTILE)) or 1.0
        image = None
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            image = ax.imshow(
                arrays[kind][r, 0],
                origin="lower",
                aspect="auto",
                cmap="RdBu_r",
                vmin=-limit,
                vmax=limit,
                extent=extent,
                interpolation="nearest",
            )
            error = "" if c == 0 else f", error {errors[kind][r]:.3g}"
            ax.set_title(f"{label if c == 0 else ''}{kind}{error}", fontsize=8)
        figure.colorbar(
            image, ax=axes[r, : len(kinds)], extend="both", label="real part", shrink=0.9, pad=0.01
        )
        if not log_views:
            continue
        decibels = []
        for kind in kinds:
            patch = arrays[kind][r] + (mean_array if mean_array is not None else 0.0)
            decibels.append(_log_magnitude(patch, features.representation))
        top = float(np.max(decibels[0]))
        for c, (kind, db) in enumerate(zip(kinds, decibels, strict=True)):
            ax = axes[r, len(kinds) + c]
            image = ax.imshow(
                db,
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=top - dynamic_range_db,
                vmax=top,
                extent=extent,
                interpolation="nearest",
            )
            ax.set_title(f"{kind}, log magnitude", fontsize=8)
        figure.colorbar(
            image, ax=axes[r, len(kinds) :], extend="min", label="dB", shrink=0.9, pad=0.01
        )
    for ax in axes[-1]:
        ax.set_xlabel("time (ms)", fontsize=8)
    for r in range(count):
        for g in range(groups):
            axes[r, g * len(kinds)].set_ylabel(y_label, fontsize=8)
            axes[r, g * len(kinds)].yaxis.set_tick_params(labelleft=True)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    parts = [title] if title else []
    if units is not None:
        parts.append(f"{units} unit{'s' if units != 1 else ''}")
    parts.append("error = Euclidean distance to the input")
    figure.suptitle(" · ".join(parts), fontsize=10)
    return figure


#: Learning curves get a log y axis when their largest value is this many times the smallest.
LOG_SCALE_SPAN = 30.0


def learning_curves_figure(
    curves: Mapping[str, Sequence[Mapping[str, Sequence[tuple[int, float]]]]],
    keys: Sequence[str],
) -> Figure:
    """One panel per metric key, every condition on the same axes (one colour per condition,
    one line per run); panels share the y axis so train and validation compare directly.

    Args:
        curves: Condition label -> its runs, each a mapping key -> ``(epoch, value)`` series.
        keys: Metric keys, one panel each.
    """
    figure = Figure(figsize=(4.2 * len(keys) + 0.5, 3.6), layout="constrained")
    axes = figure.subplots(1, len(keys), squeeze=False, sharey=True)[0]
    colours = [f"C{i % 10}" for i in range(len(curves))]
    for ax, key in zip(axes, keys, strict=True):
        for colour, (condition, runs) in zip(colours, curves.items(), strict=True):
            labelled = False
            for run in runs:
                series = run.get(key) or []
                if not series:
                    continue
                epochs, values = zip(*series, strict=True)
                ax.plot(
                    epochs,
                    values,
                    color=colour,
                    marker="o",
                    markersize=3,
                    linewidth=1.2,
                    alpha=0.85,
                    label=None if labelled else condition,
                )
                labelled = True
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(", ".join(sorted({k.split("/")[-1].split("_")[0] for k in keys})))
    values = [v for ax in axes for line in ax.get_lines() for v in line.get_ydata()]
    if values and min(values) > 0 and max(values) / min(values) > LOG_SCALE_SPAN:
        axes[0].set_yscale("log")  # one diverging run must not flatten every other curve
    handles, labels = axes[-1].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(
            handles, labels, loc="outside lower center", fontsize=8, ncols=min(3, len(labels))
        )
    return figure


def study_figures(study: Any, target_name: str = "objective") -> dict[str, Figure | str]:
    """Optuna's optimisation history, parameter importances and parallel coordinates.

    Returns name -> figure, or name -> the reason it cannot be drawn (too few trials, ...).
    """
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    target = None
    if len(study.directions) > 1:  # multi-objective: plot the first objective

        def target(trial: Any) -> float:
            return trial.values[0]

    plots = {
        "optimization_history": lambda: vis.plot_optimization_history(
            study, target=target, target_name=target_name
        ),
        "param_importances": lambda: vis.plot_param_importances(
            study,
            # PED-ANOVA: deterministic and needs no scikit-learn (Optuna's default fANOVA does).
            evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
            target=target,
            target_name=target_name,
        ),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(
            study, target=target, target_name=target_name
        ),
    }
    out: dict[str, Figure | str] = {}
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for name, plot in plots.items():
        if not complete:
            out[name] = "no complete trials yet"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend
                axes = plot()
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            out[name] = f"not drawn: {error}"
            continue
        figure = (axes.flat[0] if isinstance(axes, np.ndarray) else axes).figure
        figure.set_size_inches(7.5, 4.5)
        figure.tight_layout()  # Optuna's long parameter names are cut off otherwise
        plt.close(figure)  # detach from pyplot; the Figure object stays usable
        out[name] = figure
    return out


def save_png(figure: Figure, path: str | os.PathLike, dpi: int = 90) -> Path:
    """Write ``figure`` as PNG atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    figure.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")  # long legends stay whole
    os.replace(tmp, path)
    return path
