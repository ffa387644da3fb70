"""Log spectrogram images and audio of reconstructions of fixed validation patches."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from typing_extensions import override

log = logging.getLogger(__name__)


class ReconstructionLogger(Callback):
    """Every ``every_n_epochs`` epochs, reconstructs ``num_examples`` fixed validation patches.

    For each patch it logs a spectrogram image with rows input / reconstruction / switch-only
    reconstruction (``zero_code=True``, thesis 4.2.2's "chirp" leakage; when ``switch_only``) and
    the audio of each (inverse STFT of the patch with the training mean added back). Images and
    audio go to W&B (``wandb.Image``/``wandb.Audio``) or TensorBoard when such a logger is active,
    and always to ``<log_dir>/reconstructions/epoch=N.png`` (+ ``.wav`` files).

    The patches are the first ``num_examples`` of a seeded permutation of the validation split, so
    the same phones are shown every time and across runs with the same data.

    Args:
        every_n_epochs: Logging period in epochs.
        num_examples: Patches shown.
        switch_only: Also show the switch-only reconstruction (needs switch unpooling).
        audio: Also log audio.
        seed: Seed choosing the patches.

    Raises:
        ValueError: for a non-positive ``every_n_epochs`` or ``num_examples``.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_examples: int = 4,
        switch_only: bool = True,
        audio: bool = True,
        seed: int = 0,
    ) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("num_examples", num_examples)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.every_n_epochs = every_n_epochs
        self.num_examples = num_examples
        self.switch_only = switch_only
        self.audio = audio
        self.seed = seed

    @staticmethod
    def check_module(pl_module: pl.LightningModule) -> None:
        """Fail early (the CLI calls this before creating a run folder) on a module without
        ``reconstruct``."""
        if not hasattr(pl_module, "reconstruct"):
            raise MisconfigurationException(
                "ReconstructionLogger needs a module with reconstruct(); "
                f"{type(pl_module).__name__} has none. Use an autoencoder or remove the callback."
            )

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check_module(pl_module)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._log(trainer, pl_module)

    @rank_zero_only
    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x, labels = trainer.datamodule.example_batch(self.num_examples, seed=self.seed)
        x = x.to(pl_module.device)
        rows = {"input": x, "reconstruction": pl_module.reconstruct(x)}
        if self.switch_only and _has_switches(pl_module):
            rows["switch only"] = pl_module.reconstruct(x, zero_code=True)
        rows = {k: v.detach().float().cpu() for k, v in rows.items()}
        epoch = trainer.current_epoch
        out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "reconstructions"
        out_dir.mkdir(parents=True, exist_ok=True)
        figure = spectrogram_figure(rows, labels, title=f"epoch {epoch}")
        png = out_dir / f"epoch={epoch}.png"
        figure.savefig(png, dpi=90)
        audio = self._audio(trainer, rows) if self.audio else {}
        for name, waves in audio.items():
            for i, wave in enumerate(waves):
                _write_wav(out_dir / f"epoch={epoch}-{i}-{name.replace(' ', '_')}.wav", wave)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                _log_wandb(logger, png, audio, labels, trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                _log_tensorboard(logger, figure, audio, trainer.global_step)
        import matplotlib.pyplot as plt

        plt.close(figure)

    @staticmethod
    def _audio(trainer: pl.Trainer, rows: dict[str, torch.Tensor]) -> dict[str, list[np.ndarray]]:
        from convae_lightning.data.features import patch_to_audio

        datamodule = trainer.datamodule
        config, mean = datamodule.features, datamodule.mean_spectrogram
        if config.representation in ("log_mel", "mfcc"):
            return {}
        out: dict[str, list[np.ndarray]] = {}
        for name, patches in rows.items():
            waves = [patch_to_audio(p, mean, config).float().numpy() for p in patches]
            out[name] = [w / max(1e-6, float(np.abs(w).max())) * 0.9 for w in waves]
        return out


def _has_switches(pl_module: pl.LightningModule) -> bool:
    """Whether a zero code still carries information (some active decoder unpools by switches)."""
    units = getattr(pl_module, "active_units", lambda: [])()
    return any(u.decoder.needs_switches for u in units)


def spectrogram_figure(rows: dict[str, torch.Tensor], labels: list[str], title: str = "") -> Any:
    """A grid: one row per kind (input, reconstruction, ...), one column per patch (channel 0)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), len(labels)
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.8 * n_cols + 1, 2.4 * n_rows), squeeze=False
    )
    for r, (name, patches) in enumerate(rows.items()):
        for c in range(n_cols):
            image = patches[c, 0].numpy()
            limit = float(np.abs(rows["input"][c, 0].numpy()).max()) or 1.0
            axes[r, c].imshow(image, origin="lower", aspect="auto", cmap="RdBu_r",
                              vmin=-limit, vmax=limit)  # fmt: skip
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(f"/{labels[c]}/", fontsize=9)
            if c == 0:
                axes[r, c].set_ylabel(name, fontsize=9)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _write_wav(path: Path, wave: np.ndarray, sample_rate: int = 16000) -> None:
    import soundfile as sf

    sf.write(path, wave, sample_rate, subtype="PCM_16")


def _log_wandb(logger: WandbLogger, png: Path, audio: dict, labels: list[str], step: int) -> None:
    import wandb

    payload: dict[str, Any] = {"reconstructions/spectrograms": wandb.Image(str(png))}
    for name, waves in audio.items():
        payload[f"reconstructions/audio_{name.replace(' ', '_')}"] = [
            wandb.Audio(w, sample_rate=16000, caption=f"/{labels[i]}/") for i, w in enumerate(waves)
        ]
    logger.experiment.log({**payload, "trainer/global_step": step})


def _log_tensorboard(logger: TensorBoardLogger, figure: Any, audio: dict, step: int) -> None:
    logger.experiment.add_figure("reconstructions/spectrograms", figure, step, close=False)
    for name, waves in audio.items():
        for i, wave in enumerate(waves):
            tag = f"reconstructions/audio_{name.replace(' ', '_')}_{i}"
            logger.experiment.add_audio(tag, torch.from_numpy(wave), step, sample_rate=16000)


__all__ = ["ReconstructionLogger", "spectrogram_figure"]
