"""Shared fixtures: real toy corpora on disk (SPHERE/RIFF/FLAC) and an isolated cache folder."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import settings

from convae_lightning.data.prepare import build_cache
from convae_lightning.synth.toy import write_toy_corpus, write_toy_utterance

#: `pytest --hypothesis-profile fuzz`: the big fuzz of the audio reader (tests/test_data_timit.py),
#: 240,000 inputs or $CONVAE_FUZZ_EXAMPLES (to run it in chunks, each with --hypothesis-seed).
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("CONVAE_FUZZ_EXAMPLES", 240_000)), deadline=None
)
# Hypothesis keeps its files in ./.hypothesis unless told otherwise: tests write only to temp.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "convae-hypothesis")
)

#: Speakers of the shared toy corpus: 4 TRAIN (one becomes validation), 2 TEST.
TOY_SPEAKERS = {"TRAIN": 4, "TEST": 2}
TOY_SENTENCES = 2


@pytest.fixture(autouse=True)
def isolated_cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Point ``CONVAE_CACHE_DIR`` at a fresh folder so no test writes into ``~/.cache``."""
    cache = tmp_path_factory.mktemp("convae_cache")
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cache))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return cache


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory) -> Path:
    """An uppercase LDC-layout toy corpus (SPHERE ``.WAV`` + ``.PHN``/``.WRD``/``.TXT``, with SA1).

    Read-only for tests: copy it (``shutil.copytree``) before changing anything.
    """
    root = tmp_path_factory.mktemp("toy") / "TIMIT"
    return write_toy_corpus(root, TOY_SPEAKERS, sentences=TOY_SENTENCES, seed=0)


@pytest.fixture(scope="session")
def toy_cache(toy_corpus, tmp_path_factory) -> Path:
    """The default-settings feature cache of :func:`toy_corpus` (read-only for tests)."""
    return build_cache(toy_corpus, tmp_path_factory.mktemp("toy_cache"), progress=False)


UtteranceWriter = Callable[..., Path]


@pytest.fixture
def make_utterance() -> UtteranceWriter:
    """Write one TIMIT-layout toy utterance with the given phone ``lengths`` (in samples).

    ``make_utterance(root, "TRAIN/DR1/FCJF0/SI1027", lengths, labels, sample_rate=16000,
    audio_format="sphere", lowercase=False, gap=0, seed=0)`` returns the audio path; ``gap``
    samples of silence separate adjacent phones (unlabelled, as in places in real TIMIT). It is
    :func:`convae_lightning.synth.toy.write_toy_utterance`, the writer of every toy corpus.
    """
    return write_toy_utterance


@pytest.fixture
def tiny_corpus(tmp_path, make_utterance) -> Path:
    """A minimal valid corpus: 3 TRAIN speakers and 1 TEST speaker, 2 sentences each."""
    root = tmp_path / "TIMIT"
    labels = ["h#", "aa", "s", "iy", "q", "t", "h#"]
    lengths = [800, 1200, 1500, 1100, 300, 900, 700]
    speakers = (("TRAIN", "FCJF0"), ("TRAIN", "MDAC0"), ("TRAIN", "FDAW0"), ("TEST", "MDAB0"))
    for s, (split, speaker) in enumerate(speakers):
        for k, sentence in enumerate(("SI1027", "SX127")):
            make_utterance(
                root, f"{split}/DR1/{speaker}/{sentence}", lengths, labels, seed=2 * s + k
            )
    return root


# ------------------------------------------------------------------ damaged audio files


def corrupt_flac_frames(path: Path) -> None:
    """Damage a FLAC's compressed frames but not its STREAMINFO header: headers read, decoding
    fails (what only a full decode finds)."""
    data = bytearray(path.read_bytes())
    for i in range(400, len(data) - 50, 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def write_streamed_flac(path: Path, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """A FLAC whose STREAMINFO announces no length (total samples 0), as a pipe writes it:
    libsndfile then reports 2**63 - 1 frames."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    # STREAMINFO starts at byte 8; its 36-bit total-samples field ends at byte 8 + 18.
    data[8 + 13] &= 0xF0
    data[8 + 14 : 8 + 18] = bytes(4)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every test starts from the same RNG state, whatever ran before it."""
    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)


#: Overrides that make any run config a seconds-long CLI run (CLI tests).
TINY = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "2",
    "--data.train_per_class", "5",
    "--data.eval_per_class", "3",
]  # fmt: skip


def cli_env(cache: Path) -> dict[str, str]:
    """The caller's environment without any W&B setting, with a shared feature cache (CLI tests)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["CONVAE_CACHE_DIR"] = str(cache)
    env["COLUMNS"] = "200"
    return env


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory) -> Path:
    """One feature cache for every CLI test module (the embedded corpus is cached once)."""
    path = tmp_path_factory.getbasetemp() / "convae_cli_cache"
    path.mkdir(exist_ok=True)
    return path
