"""``convae reconstruct CKPT --input chirp|PATH|val:N [--out DIR]``: what a trained autoencoder
makes of a sound, and of the same sound with its code zeroed.

The switch-leakage ("chirp") experiment of thesis 4.2.2 (Figure 3, after Churchman 2015): encode
a non-speech sound, zero the code, decode with the switches alone. A good reconstruction from
zeros means the switches, not the code, carry the input. Inputs: a synthesised linear chirp of
one phone segment, any audio file (cut into phone-length segments), or validation example N. It
writes ``<stem>.png`` (rows input / reconstruction / code zeroed, each row with its own colour
scale and colour bar) and ``<stem>-{input,reconstruction,code_zeroed}.wav``.

The checkpoint must come from ``convae fit`` (it holds the DataModule's hyper-parameters): the
features, the training mean, the segment length and the sample rate are the training data's.

    convae reconstruct runs/weak_stack/version_0/checkpoints/unit2.ckpt --input chirp
    python -m convae_lightning.reconstruct CKPT --input speech.wav --out figures/
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jsonargparse import CLI

from convae_lightning.callbacks.reconstruction import (
    reconstruction_rows,
    rows_to_audio,
    spectrogram_figure,
    write_wav,
)
from convae_lightning.data import TimitDataModule
from convae_lightning.data.features import audio_to_patches
from convae_lightning.models import ConvAutoencoder, StackedAutoencoder
from convae_lightning.models.base import read_checkpoint

__all__ = ["chirp", "main", "reconstruct"]

#: Checkpoint kinds this command reads, and the class that loads each.
AUTOENCODERS = {"autoencoder": ConvAutoencoder, "stacked_autoencoder": StackedAutoencoder}


def chirp(num_samples: int, sample_rate: int, start_hz: float, end_hz: float) -> np.ndarray:
    """A unit-amplitude linear chirp from ``start_hz`` to ``end_hz`` over ``num_samples``."""
    t = np.arange(num_samples) / sample_rate
    duration = num_samples / sample_rate
    sweep = (end_hz - start_hz) / (2 * duration)
    return np.sin(2 * np.pi * (start_hz * t + sweep * t**2)).astype(np.float32)


def reconstruct(
    checkpoint: str,
    input: str = "chirp",
    out: str | None = None,
    chirp_start_hz: float = 100.0,
    chirp_end_hz: float | None = None,
) -> list[Path]:
    """Reconstruct a chirp, an audio file or a validation example with a trained autoencoder.

    Args:
        checkpoint: An autoencoder checkpoint written by ``convae fit`` (``last.ckpt``, a best
            checkpoint, a stacked run's ``unit{k}.ckpt``).
        input: ``chirp`` (one segment, scaled to the median energy of the validation patches),
            the path of an audio file (resampled to the training rate, cut into consecutive
            segments), or ``val:N`` (example N of the split the run validated on).
        out: Output folder; default: the run's ``reconstructions/`` folder beside
            ``checkpoints/``.
        chirp_start_hz: Start frequency of the chirp.
        chirp_end_hz: End frequency of the chirp; default 0.45 x the sample rate.

    Returns:
        The files written.

    Raises:
        FileNotFoundError: for a missing checkpoint or audio file.
        ValueError: for a checkpoint that is not an autoencoder's or lacks the DataModule's
            hyper-parameters, an unreadable audio file or an example index out of range.
    """
    path = Path(checkpoint)
    ckpt, meta = read_checkpoint(path, tuple(AUTOENCODERS), "checkpoint")
    data_hparams = ckpt.get("datamodule_hyper_parameters")
    if not data_hparams:
        raise ValueError(
            f"checkpoint: {str(path)!r} holds no datamodule_hyper_parameters (write it with "
            "`convae fit`): the features it was trained on cannot be rebuilt"
        )
    del ckpt  # the model loads it again; keep one copy of the weights in memory
    # LightningCLI records how it built the DataModule (``_instantiator``, ``_class_path``).
    arguments = {k: v for k, v in data_hparams.items() if not k.startswith("_")}
    dm = TimitDataModule(**{**arguments, "progress": False})
    dm.prepare_data()
    dm.setup()
    model = AUTOENCODERS[meta["kind"]].load_from_checkpoint(path, map_location="cpu").eval()

    x, title, tag = _input_patches(dm, input, chirp_start_hz, chirp_end_hz)
    rows = reconstruction_rows(model, x, zero_code=True)
    out_dir = Path(out) if out is not None else path.parent.parent / "reconstructions"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{path.stem}-{tag}"
    # Consecutive segments side by side: one spectrogram over the whole input per row.
    joined = {name: torch.cat(list(patches), dim=-1).unsqueeze(0) for name, patches in rows.items()}
    heading = f"{path.name}: {meta['kind']}, {model.num_active_units} units"
    figure = spectrogram_figure(joined, [title], heading)
    written = [out_dir / f"{stem}.png"]
    figure.savefig(written[0], dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    audio = rows_to_audio(rows, dm.features, dm.mean_spectrogram, normalise=False)
    for name, waves in audio.items():
        wave = np.concatenate(waves)
        written.append(out_dir / f"{stem}-{name.replace(' ', '_')}.wav")
        write_wav(written[-1], wave / max(1e-6, float(np.abs(wave).max())) * 0.9, dm.sample_rate)
    return written


def _input_patches(
    dm: TimitDataModule, spec: str, start_hz: float, end_hz: float | None
) -> tuple[torch.Tensor, str, str]:
    """Mean-subtracted patches ``(N, C, F, T)`` of the input, a caption and a file-name tag."""
    config, mean, length = dm.features, dm.mean_spectrogram, dm.segment_length
    if spec == "chirp":
        end_hz = end_hz if end_hz is not None else 0.45 * dm.sample_rate
        wave = chirp(length, dm.sample_rate, start_hz, end_hz)
        # Scale it like the data: the median energy of the validation patches (mean added back).
        raw = audio_to_patches(wave, config, length)
        examples, _ = dm.example_batch(64, split=dm.hparams.val_split)
        typical = (examples + torch.as_tensor(mean)).flatten(1).norm(dim=1).median()
        wave = wave * float(typical / raw.flatten(1).norm(dim=1)[0].clamp_min(1e-12))
        caption = f"linear chirp {start_hz:.0f}-{end_hz:.0f} Hz"
        return audio_to_patches(wave, config, length, mean), caption, "chirp"
    if spec.startswith("val:"):
        return _validation_example(dm, spec)
    return _audio_file(dm, Path(spec))


def _validation_example(dm: TimitDataModule, spec: str) -> tuple[torch.Tensor, str, str]:
    split, index = dm.hparams.val_split, spec.removeprefix("val:")
    try:
        if not index.isdigit():
            raise IndexError(f"{index!r} is not an example number")
        x, label = dm.example(int(index), split)
    except IndexError as error:
        raise ValueError(f"--input {spec!r}: {error}; use val:N") from None
    return x, f"/{label}/ ({split} example {index})", f"val{index}"


def _audio_file(dm: TimitDataModule, path: Path) -> tuple[torch.Tensor, str, str]:
    import soundfile as sf
    import torchaudio

    if not path.is_file():
        raise FileNotFoundError(
            f"--input: {str(path)!r} does not exist (use chirp, val:N or an audio file)"
        )
    try:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise ValueError(f"--input: {str(path)!r} is not a readable audio file ({error})") from None
    signal = torch.from_numpy(wave.mean(axis=1))  # mono
    if rate != dm.sample_rate:
        signal = torchaudio.functional.resample(signal, rate, dm.sample_rate)
    patches = audio_to_patches(signal, dm.features, dm.segment_length, dm.mean_spectrogram)
    return patches, f"{path.name} ({len(patches)} segments)", path.stem


def main(argv: Sequence[str] | None = None) -> None:
    """``convae reconstruct`` / ``python -m convae_lightning.reconstruct``; bad input is one
    line on stderr and exit status 2 (``CONVAE_DEBUG=1`` shows the traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        written = CLI(reconstruct, args=args, prog="convae reconstruct")
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("CONVAE_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
