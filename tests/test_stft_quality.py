"""Table 1 (thesis 2.2.2): the readings on synthetic signals, and ``convae data stft-quality``."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from convae_lightning.data.features import FeatureConfig, PatchExtractor
from convae_lightning.data.stft_quality import (
    BINS,
    ROWS,
    THESIS_TABLE1,
    Framing,
    Reading,
    Table1,
    all_readings,
    best_lag,
    correlate,
    evaluate,
    pearson,
)
from convae_lightning.data.stft_quality_command import phone_segments, stft_quality
from convae_lightning.data.timit import find_utterances

CLI = [sys.executable, "-m", "convae_lightning.cli", "data"]
CONFIG = FeatureConfig()
LENGTH = CONFIG.segment_length(16)  # 2552


def padded_phones(count: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Phone-like bursts (harmonics plus noise) centred in zeros, and their masks."""
    rng = np.random.default_rng(seed)
    audio = torch.zeros(count, LENGTH, dtype=torch.float64)
    mask = torch.zeros(count, LENGTH, dtype=torch.bool)
    for i in range(count):
        n = int(rng.integers(400, 2400))
        t = np.arange(n) / 16000
        f0 = rng.uniform(100, 300)
        burst = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in (1, 2, 3, 5))
        offset = (LENGTH - n) // 2
        audio[i, offset : offset + n] = torch.from_numpy(burst + rng.normal(0, 0.05, n))
        mask[i, offset : offset + n] = True
    return audio, mask


# --------------------------------------------------------------------------- measures


def test_pearson_and_best_lag_known_values():
    x = torch.randn(3, 500, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pearson(x, 2 * x + 1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(pearson(x, -x), -torch.ones(3, dtype=torch.float64))
    padded = torch.nn.functional.pad(x, (40, 40))
    shifted = torch.roll(padded, 17, dims=-1)  # a delay inside the zero padding
    assert (pearson(padded, shifted).abs() < 0.2).all()
    torch.testing.assert_close(best_lag(padded, shifted), torch.ones(3, dtype=torch.float64))
    # Only the masked samples count: outside them the reconstruction may be anything.
    mask = torch.zeros_like(padded, dtype=torch.bool)
    mask[:, 40:-40] = True
    torch.testing.assert_close(
        pearson(padded, padded + 5 * (~mask), mask), torch.ones(3, dtype=torch.float64)
    )
    assert math.isnan(pearson(x[:1], torch.zeros(1, 500, dtype=torch.float64)).item())


@pytest.mark.parametrize("measure", ["waveform", "waveform_phone", "best_lag", "spectrogram"])
@pytest.mark.parametrize("bins", [201, 301])
def test_a_perfect_inverse_correlates_one_under_every_measure(measure, bins):
    audio, mask = padded_phones()
    framing = Framing(CONFIG, 2 * (bins - 1))
    rebuilt = framing.synthesise(framing.analyse(audio), LENGTH)
    torch.testing.assert_close(rebuilt, audio, rtol=0, atol=1e-9)
    values = correlate(audio, rebuilt, measure, mask, framing)
    torch.testing.assert_close(values, torch.ones(len(audio), dtype=torch.float64))


# --------------------------------------------------------------------------- framings


def test_framing_matches_the_patches_when_the_window_fits():
    audio, _ = padded_phones(2)
    ours = Framing(CONFIG, 400).analyse(audio)
    extractor = PatchExtractor(FeatureConfig(representation="real_imag"))
    patches = extractor.to(torch.float64)(audio)
    np.testing.assert_allclose(ours.real.numpy(), patches[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.imag.numpy(), patches[:, 1].numpy(), atol=1e-5)


@pytest.mark.parametrize("short_fft", ["truncate", "wrap"])
def test_a_short_fft_truncates_or_wraps_the_frame(short_fft):
    """101 bins: n_fft 200 < 272-sample window (MATLAB's fft(x, 200) vs spectrogram's datawrap)."""
    audio, _ = padded_phones(2)
    spec = Framing(CONFIG, 200, short_fft).analyse(audio)
    assert spec.shape == (2, 101, 16)
    x = audio.numpy()
    for t in (0, 7, 15):
        frame = x[:, 152 * t : 152 * t + 272] * np.hamming(272)
        folded = frame[:, :200].copy()
        if short_fft == "wrap":
            folded[:, :72] += frame[:, 200:]
        np.testing.assert_allclose(spec[..., t].numpy(), np.fft.rfft(folded), atol=1e-9)


def test_plain_overlap_add_multiplies_by_the_window_sum():
    audio, _ = padded_phones(2)
    framing = Framing(CONFIG, 400)
    plain = framing.synthesise(framing.analyse(audio), LENGTH, "plain")
    envelope = np.zeros(LENGTH)
    for t in range(16):
        envelope[152 * t : 152 * t + 272] += np.hamming(272)
    np.testing.assert_allclose(plain.numpy(), audio.numpy() * envelope, atol=1e-9)


def test_framing_rejects_an_fft_shorter_than_the_hop():
    with pytest.raises(ValueError, match=r"n_fft=100 \(51 bins\) is shorter than the hop"):
        Framing(CONFIG, 100)


# --------------------------------------------------------------------------- readings and table


def test_reading_choices_are_checked_and_enumerated():
    with pytest.raises(ValueError, match=r"measure must be one of \('waveform',"):
        Reading(measure="xcorr")  # type: ignore[arg-type]
    readings = all_readings()
    assert len(readings) == len(set(readings)) == 2 * 3 * 2 * 4
    assert Reading() in readings and Reading().name == "wrap/real_part/normalised/waveform"


def evaluated(readings, count: int = 6, iters: int = 4) -> Table1:
    table = Table1(readings)
    audio, mask = padded_phones(count)
    evaluate(table, audio[: count // 2], mask[: count // 2], CONFIG, iters)
    evaluate(table, audio[count // 2 :], mask[count // 2 :], CONFIG, iters)
    return table


def test_phase_and_bins_order_the_cells_as_the_stft_predicts():
    table = evaluated([Reading(discard=d) for d in ("real_part", "zero_phase", "griffin_lim")])
    assert table.segments == 6 and table.undefined == 0
    real, zero, gl = table.readings
    for bins in (201, 301):
        assert table.cell(real, "available", bins) == pytest.approx(1.0, abs=1e-9)
    # The real part folds each frame onto its time-reverse: fatal at 101 bins, gone at 301.
    folded = [table.cell(real, "discarded", b) for b in BINS]
    assert folded[0] < folded[1] < folded[2] and folded[2] > 0.99
    # Least squares recovers what the next frame sees unfolded (all but the padded last frame).
    assert table.cell(real, "real_part", 201) > 0.999 > folded[1]
    # Amplitude alone keeps no waveform: zero phase and Griffin-Lim barely correlate.
    for reading in (zero, gl):
        assert abs(table.cell(reading, "discarded", 201)) < 0.5


def test_spectrogram_measure_sees_griffin_lim_succeed():
    table = evaluated([Reading(discard="griffin_lim", measure="spectrogram")], iters=16)
    assert table.cell(table.readings[0], "discarded", 301) > 0.8


def test_distance_is_the_rms_gap_to_the_thesis_numbers():
    reading = Reading()
    table = Table1([reading])
    for row in ROWS:
        for bins in BINS:
            value = THESIS_TABLE1.get(row, {}).get(bins)
            table.add(reading, row, bins, torch.tensor([0.1 + (value or 0.0)]))
    assert table.distance(reading) == pytest.approx(0.1)
    assert table.cell(reading, "real_part", 101) == pytest.approx(0.1)


# --------------------------------------------------------------------------- the command


def test_phone_segments_are_centred_in_zeros_and_long_phones_left_out(tmp_path, make_utterance):
    path = make_utterance(
        tmp_path / "C", "TRAIN/DR1/FCJF0/SI1027", [500, 3000, 700, 300], ["h#", "aa", "q", "s"]
    )
    (utterance,) = find_utterances(tmp_path / "C")
    segments, masks, too_long = phone_segments(utterance, CONFIG, LENGTH)
    assert too_long == 1 and segments.shape == (2, LENGTH)  # q dropped, aa too long
    assert masks.sum(1).tolist() == [500, 300]
    audio, _ = sf.read(str(path))
    offset = (LENGTH - 500) // 2
    np.testing.assert_allclose(segments[0, offset : offset + 500].numpy(), audio[:500], atol=1e-4)
    assert segments[0, :offset].abs().max() == 0 and not masks[0, :offset].any()


def test_stft_quality_limits_segments_and_utterances(tiny_corpus):
    table = stft_quality(str(tiny_corpus), max_segments=7, batch_size=4, progress=False)
    assert table.segments == 7 and table.readings == [Reading()]
    table = stft_quality(str(tiny_corpus), max_utterances=2, progress=False, bins=[201])
    assert table.segments == 2 * 6 and table.bins == (201,)  # 7 phones a sentence, q dropped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": [50]}, "n_fft=98 (50 bins) is shorter than the hop"),
        ({"bins": []}, "bins must name at least one"),
        ({"max_segments": 0}, "max_segments must be positive, got 0"),
        ({"num_frames": 1}, "no phone of at most 272 samples (1 frames) found"),
        ({"measure": "xcorr"}, "measure must be one of"),
    ],
)
def test_stft_quality_bad_options(tiny_corpus, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        stft_quality(str(tiny_corpus), progress=False, **kwargs)


@pytest.mark.slow
def test_command_writes_table1_and_every_reading(tiny_corpus, tmp_path):
    out = tmp_path / "table1"
    env = {**os.environ, "COLUMNS": "200"}
    args = [str(tiny_corpus), "--out", str(out), "--max_segments", "12"]
    args += ["--all_readings", "true", "--griffin_lim_iters", "2"]
    run = subprocess.run(
        [*CLI, "stft-quality", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "Table 1, reading wrap/real_part/normalised/waveform" in run.stdout
    assert "(thesis 0.67)" in run.stdout and "12 phone segments" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "readings.csv",
        "readings.md",
        "table1.csv",
        "table1.md",
    ]
    rows = list(csv.DictReader((out / "table1.csv").open()))
    assert list(rows[0]) == ["row", "bins", "n_fft", "ours", "thesis", "reading", "segments"]
    assert [(r["row"], r["bins"], r["n_fft"]) for r in rows] == [
        (row, str(b), str(2 * (b - 1))) for row in ROWS for b in BINS
    ]
    thesis = {(r["row"], int(r["bins"])): r["thesis"] for r in rows}
    assert thesis[("available", 101)] == "0.67" and thesis[("available", 301)] == "N/A"
    assert thesis[("discarded", 301)] == "0.98" and thesis[("real_part", 201)] == ""
    assert all(-1 <= float(r["ours"]) <= 1 and r["segments"] == "12" for r in rows)
    ranked = list(csv.DictReader((out / "readings.csv").open()))
    assert len(ranked) == 48
    distances = [float(r["distance"]) for r in ranked]
    assert distances == sorted(distances)
    assert set(ranked[0]) >= {"reading", "distance", "available_101", "real_part_301"}
    markdown = (out / "table1.md").read_text()
    assert "| phase available | " in markdown and "(thesis 0.92)" in markdown


@pytest.mark.slow
def test_command_reports_bad_options_in_one_line(tmp_path):
    run = subprocess.run(
        [*CLI, "stft-quality", "--bins", "[50]", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert "error: n_fft=98 (50 bins) is shorter than the hop" in run.stderr
    assert not (tmp_path / "x").exists()


def test_default_reading_is_first_and_its_table_printed(tiny_corpus, capsys):
    chosen = Reading(short_fft="truncate", measure="best_lag")
    table = stft_quality(
        str(tiny_corpus),
        max_segments=5,
        short_fft=chosen.short_fft,
        measure=chosen.measure,
        progress=False,
    )
    assert table.readings == [chosen]
    assert "Table 1, reading truncate/real_part/normalised/best_lag" in capsys.readouterr().out
