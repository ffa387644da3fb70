"""``convae reconstruct`` (``python -m convae_lightning.reconstruct``) on a checkpoint of a real
fit over the embedded corpus: every input kind writes its files, bad input is one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_helpers import BIN, CONF, run_cli
from conftest import TINY, cli_env
from model_helpers import embedded_datamodule, tiny_trainer

from convae_lightning.models import ConvAutoencoder, ForwardClassifier
from convae_lightning.reconstruct import main

SMALL = {"conv_channels": (4, 4, 8, 16)}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A 2-unit switch autoencoder fitted briefly; its checkpoint sits in a run-like folder."""
    root = tmp_path_factory.mktemp("run")
    dm = embedded_datamodule(tmp_path_factory.mktemp("cache"))
    model = ConvAutoencoder(input_shape=dm.input_shape, num_units=2, **SMALL)
    trainer = tiny_trainer(root)
    trainer.fit(model, dm)
    (root / "checkpoints").mkdir()
    path = root / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    classifier = ForwardClassifier(input_shape=dm.input_shape, fc_sizes=(16,), **SMALL)
    trainer = tiny_trainer(root)
    trainer.fit(classifier, dm)
    trainer.save_checkpoint(root / "classifier.ckpt")
    return {"root": root, "ckpt": path, "dm": dm}


def wavs_of(files: list[Path]) -> dict[str, sf._SoundFileInfo]:
    return {p.stem.rsplit("-", 1)[1]: sf.info(p) for p in files if p.suffix == ".wav"}


def test_a_checkpoint_written_by_convae_fit(tmp_path, cli_cache) -> None:
    """The checkpoints users have: ``convae fit`` records how LightningCLI built the DataModule
    (``_instantiator``) beside its arguments, which reconstruct must not pass on."""
    args = [
        "fit",
        "--config",
        str(CONF / "regular_ae.yaml"),
        *TINY,
        "--model.init_args.num_units",
        "2",
    ]
    fit = run_cli("convae", args, tmp_path, cli_cache, "regular_ae")
    assert fit.returncode == 0, fit.explain()
    checkpoint = fit.run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "reconstructions"
    command = [str(BIN / "convae"), "reconstruct", str(checkpoint), "--input", "chirp"]
    done = subprocess.run(
        [*command, "--out", str(out)],
        env=cli_env(cli_cache), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "last-chirp.png").stat().st_size > 5000


def test_chirp_writes_figure_and_audio_beside_the_checkpoint(run, capsys) -> None:
    main([str(run["ckpt"]), "--input", "chirp"])
    written = [Path(line) for line in capsys.readouterr().out.split()]
    out = run["root"] / "reconstructions"
    assert written[0] == out / "last-chirp.png" and written[0].stat().st_size > 5000
    wavs = wavs_of(written)
    assert set(wavs) == {"input", "reconstruction", "code_zeroed"}
    dm = run["dm"]
    for info in wavs.values():
        assert (info.samplerate, info.frames) == (dm.sample_rate, dm.segment_length)
    # The input row is the chirp itself: its frequency rises over the segment.
    wave, _ = sf.read(out / "last-chirp-input.wav")
    half = len(wave) // 2
    assert _zero_crossings(wave[half:]) > 2 * _zero_crossings(wave[:half])


def _zero_crossings(wave: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(np.signbit(wave))))


def test_audio_file_is_resampled_and_cut_into_segments(run, tmp_path, capsys) -> None:
    dm = run["dm"]
    rate = 22050  # not the corpus rate: resampled to it first
    seconds = 2.5 * dm.segment_length / dm.sample_rate  # 2.5 segments -> 3 patches
    t = np.arange(int(seconds * rate)) / rate
    sf.write(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t), rate)
    main([str(run["ckpt"]), "--input", str(tmp_path / "tone.wav"), "--out", str(tmp_path / "o")])
    written = [Path(line) for line in capsys.readouterr().out.split()]
    assert written[0] == tmp_path / "o" / "last-tone.png"
    for info in wavs_of(written).values():
        assert (info.samplerate, info.frames) == (dm.sample_rate, 3 * dm.segment_length)


def test_validation_example_through_python_m(run, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "convae_lightning.reconstruct", str(run["ckpt"]),
         "--input", "val:3", "--out", str(tmp_path)],
        capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"last-val3-{k}.wav" for k in ("code_zeroed", "input", "reconstruction")] + [
        "last-val3.png"
    ]
    # The input row is example 3 of the validation split with the training mean added back.
    expected_len = run["dm"].segment_length
    assert sf.info(tmp_path / "last-val3-input.wav").frames == expected_len


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--input", "val:100000"], r"--input 'val:100000': the 'val' split has \d+ examples"),
        (["--input", "val:x"], "use val:N"),
        (["--input", "missing.wav"], r"--input: 'missing.wav' does not exist"),
        (["--input", "not_audio.wav"], "is not a readable audio file"),
    ],
)
def test_bad_input_is_one_line(run, tmp_path, capsys, monkeypatch, args, match) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not_audio.wav").write_text("no audio here")
    with pytest.raises(SystemExit) as exit_info:
        main([str(run["ckpt"]), *args, "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert re.search(match, err), err


def test_checkpoints_that_cannot_be_reconstructed(run, tmp_path, capsys) -> None:
    ckpt = torch.load(run["ckpt"], weights_only=False)
    del ckpt["datamodule_hyper_parameters"]
    torch.save(ckpt, tmp_path / "bare.ckpt")
    cases = {
        str(run["root"] / "classifier.ckpt"): "is a 'forward_classifier' checkpoint",
        str(tmp_path / "bare.ckpt"): "holds no datamodule_hyper_parameters",
        str(tmp_path / "absent.ckpt"): "does not exist",
    }
    for path, match in cases.items():
        with pytest.raises(SystemExit):
            main([path, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert err.startswith(f"error: checkpoint: {path!r}") or path in err, err
        assert match in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing written for bad input
