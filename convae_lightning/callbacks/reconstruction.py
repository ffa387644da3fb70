"""Log spectrogram images and audio of reconstructions of fixed validation patches; the figure
and audio helpers are shared with ``convae reconstruct``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from convae_lightning.callbacks.checks import require_module
from convae_lightning.console import run_folder
from convae_lightning.report.figures import save_png, spectrogram_figure

__all__ = [
    "ReconstructionLogger",
    "reconstruction_rows",
    "rows_to_audio",
    "spectrogram_figure",
    "write_wav",
]


class ReconstructionLogger(Callback):
    """Every ``every_n_epochs`` epochs, reconstructs ``num_examples`` fixed validation patches.

    For each patch it logs a spectrogram image with rows input / reconstruction / code zeroed
    (decoded from the switches alone, thesis 4.2.2's "chirp" leakage; when ``switch_only`` and
    the module unpools by switches) and
    the audio of each (inverse STFT of the patch with the training mean added back, at the
    datamodule's ``sample_rate``). Images and audio go to W&B (``wandb.Image``/``wandb.Audio``)
    or TensorBoard when such a logger is active, and always to
    ``<log_dir>/reconstructions/epoch=N.png`` (+ ``.wav`` files).

    The patches are ``datamodule.example_batch(num_examples, seed=seed)``: the same phones every
    time and across runs with the same data.

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
        """Fail early on a module without ``reconstruct``."""
        require_module(
            "ReconstructionLogger",
            pl_module,
            ["reconstruct"],
            "Use an autoencoder or remove the callback.",
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
        datamodule = trainer.datamodule
        x, labels = datamodule.example_batch(self.num_examples, seed=self.seed)
        zero_code = self.switch_only and getattr(pl_module, "uses_switches", False)
        rows = reconstruction_rows(pl_module, x, zero_code)
        epoch = trainer.current_epoch
        # Not trainer.log_dir: it broadcasts, and this runs on rank 0 only (a DDP deadlock).
        out_dir = Path(run_folder(trainer) or trainer.default_root_dir) / "reconstructions"
        out_dir.mkdir(parents=True, exist_ok=True)
        figure = spectrogram_figure(
            rows,
            [f"/{label}/" for label in labels],
            f"epoch {epoch}",
            features=datamodule.features,
            mean=datamodule.mean_spectrogram,
            units=getattr(pl_module, "num_active_units", None),
        )
        png = save_png(figure, out_dir / f"epoch={epoch}.png")  # as the report draws its own
        sample_rate = datamodule.sample_rate
        audio = {}
        if self.audio:
            audio = rows_to_audio(rows, datamodule.features, datamodule.mean_spectrogram)
        for name, waves in audio.items():
            for i, wave in enumerate(waves):
                write_wav(out_dir / f"epoch={epoch}-{i}-{_tag(name)}.wav", wave, sample_rate)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                _log_wandb(logger, png, audio, labels, sample_rate, trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                _log_tensorboard(logger, figure, audio, sample_rate, trainer.global_step)


def reconstruction_rows(
    pl_module: Any, x: torch.Tensor, zero_code: bool
) -> dict[str, torch.Tensor]:
    """``{"input", "reconstruction"[, "code zeroed"]}`` patches ``(N, C, F, T)`` on the CPU.

    ``code zeroed`` decodes a zeroed code with the switches kept: Figure 3's "mangled" output
    (with blind upsampling it shows what the decoder makes of nothing).
    """
    x = x.to(pl_module.device)
    rows = {"input": x, "reconstruction": pl_module.reconstruct(x)}
    if zero_code:
        rows["code zeroed"] = pl_module.reconstruct(x, zero_code=True)
    return {k: v.detach().float().cpu() for k, v in rows.items()}


def rows_to_audio(
    rows: dict[str, torch.Tensor], config: Any, mean: np.ndarray | None, normalise: bool = True
) -> dict[str, list[np.ndarray]]:
    """The audio of every patch (training mean added back), each peak-normalised to 0.9 unless
    ``normalise`` is off; empty for representations that cannot be inverted (``log_mel``,
    ``mfcc``)."""
    from convae_lightning.data.features import patch_to_audio

    if config.representation in ("log_mel", "mfcc"):
        return {}
    out: dict[str, list[np.ndarray]] = {}
    for name, patches in rows.items():
        waves = [patch_to_audio(p, mean, config).float().numpy() for p in patches]
        if normalise:
            waves = [w / max(1e-6, float(np.abs(w).max())) * 0.9 for w in waves]
        out[name] = waves
    return out


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV at ``sample_rate`` (the corpus's rate: anything else changes the pitch)."""
    import soundfile as sf

    sf.write(path, wave, sample_rate, subtype="PCM_16")


def _tag(name: str) -> str:
    return name.replace(" ", "_")


def _log_wandb(
    logger: WandbLogger, png: Path, audio: dict, labels: list[str], sample_rate: int, step: int
) -> None:
    import wandb

    payload: dict[str, Any] = {"reconstructions/spectrograms": wandb.Image(str(png))}
    for name, waves in audio.items():
        payload[f"reconstructions/audio_{_tag(name)}"] = [
            wandb.Audio(w, sample_rate=sample_rate, caption=f"/{labels[i]}/")
            for i, w in enumerate(waves)
        ]
    logger.experiment.log({**payload, "trainer/global_step": step})


def _log_tensorboard(
    logger: TensorBoardLogger, figure: Any, audio: dict, sample_rate: int, step: int
) -> None:
    logger.experiment.add_figure("reconstructions/spectrograms", figure, step, close=False)
    for name, waves in audio.items():
        for i, wave in enumerate(waves):
            tag = f"reconstructions/audio_{_tag(name)}_{i}"
            logger.experiment.add_audio(tag, torch.from_numpy(wave), step, sample_rate=sample_rate)
