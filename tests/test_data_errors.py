"""Bad corpora end to end: a clear error naming the file (and line), or with on_error="skip" a
counted warning and the file left out, and never a partial cache."""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import corrupt_flac_frames, write_streamed_flac

from convae_lightning.data.prepare import CorpusOptions, build_cache
from convae_lightning.data.stats import corpus_stats
from convae_lightning.data.timit import CorpusError, find_utterances
from convae_lightning.synth.layout import write_audio

# tiny_corpus (conftest): 4 speakers x 2 sentences = 8 utterances, 7 phones each, one of them q.
UTTERANCES = 8
VICTIM = "TRAIN/DR1/MDAC0/SX127"


def replace_phn_line(root: Path, line: int, text: str) -> tuple[Path, int]:
    phn = root / f"{VICTIM}.PHN"
    lines = phn.read_text().splitlines()
    lines[line - 1] = text
    phn.write_text("\n".join(lines) + "\n")
    return phn, line


def missing_phn(root: Path):
    (root / f"{VICTIM}.PHN").unlink()
    return root / f"{VICTIM}.WAV", None, "audio file has no .PHN phone-label file beside it"


def truncated_sphere(root: Path):
    wav = root / f"{VICTIM}.WAV"
    wav.write_bytes(wav.read_bytes()[:3000])
    return wav, None, "truncated: header announces 6500 samples, file holds 988"


def random_bytes(root: Path):
    wav = root / f"{VICTIM}.WAV"
    wav.write_bytes(np.random.default_rng(0).bytes(4000))
    return wav, None, "not a readable audio file"


def replace_audio(root: Path, name: str, audio: np.ndarray, **kwargs) -> Path:
    """Swap the victim's SPHERE .WAV for another file (the reader takes any of the copies)."""
    (root / f"{VICTIM}.WAV").unlink()
    path = root / f"{VICTIM}{name}"
    sf.write(str(path), audio, 16000, **kwargs)
    return path


def nan_samples(root: Path):
    audio = np.full(6500, 0.1, dtype=np.float32)
    audio[[100, 5000]] = np.nan
    path = replace_audio(root, ".WAV.wav", audio, subtype="FLOAT")
    return path, None, "2 NaN or infinite sample(s), the first at sample 100"


def inf_samples(root: Path):
    audio = np.full(6500, 0.1, dtype=np.float32)
    audio[-1] = np.inf
    path = replace_audio(root, ".WAV.wav", audio, subtype="FLOAT")
    return path, None, "1 NaN or infinite sample(s), the first at sample 6499"


def corrupt_frames(root: Path):
    audio = (np.sin(np.arange(6500) / 5) * 9000).astype(np.int16)
    path = replace_audio(root, ".flac", audio)
    corrupt_flac_frames(path)
    return path, None, "not a readable audio file"


def streamed_flac(root: Path):
    (root / f"{VICTIM}.WAV").unlink()
    path = write_streamed_flac(root / f"{VICTIM}.flac", np.full(6500, 900, np.int16))
    return path, None, "the header announces no length"


def other_sample_rate(root: Path):
    wav = root / f"{VICTIM}.WAV"
    write_audio(wav, np.zeros(6500) + 0.1, sample_rate=8000)  # the .PHN still fits
    return wav, None, "sample rate 8000 Hz differs from the corpus's 16000 Hz"


def phn_case(line: int, text: str, message: str) -> Callable:
    def damage(root: Path):
        phn, line_no = replace_phn_line(root, line, text)
        return phn, line_no, message

    return damage


# tiny_corpus phone lengths 800 1200 1500 1100 300 900 700: ends 800 2000 3500 4600 4900 5800 6500
BAD_INPUTS = {
    "missing_phn": missing_phn,
    "truncated_sphere": truncated_sphere,
    "random_bytes": random_bytes,
    "other_sample_rate": other_sample_rate,
    "nan_samples": nan_samples,
    "inf_samples": inf_samples,
    "corrupt_frames": corrupt_frames,
    "streamed_flac": streamed_flac,
    "two_fields": phn_case(2, "800 2000", "expected 'start end label', got 2 fields"),
    "non_numeric": phn_case(3, "2000 3.5e3 s", "sample offsets must be integers"),
    "end_before_start": phn_case(3, "2000 1999 s", "segment end 1999 must be after start 2000"),
    "end_beyond_audio": phn_case(7, "5800 9000 h#", "segment end 9000 lies beyond the audio"),
    "unknown_label": phn_case(4, "3500 4600 iyy", "unknown phone label 'iyy'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_naming_file_and_line(tiny_corpus, tmp_path, case):
    path, line, message = BAD_INPUTS[case](tiny_corpus)
    where = f"{path}:{line}: " if line else f"{path}: "
    cache_dir = tmp_path / "cache"
    with pytest.raises(CorpusError, match=re.escape(where) + ".*" + re.escape(message)) as info:
        build_cache(tiny_corpus, cache_dir, progress=False)
    assert info.value.path == path and info.value.line == line
    left = list(cache_dir.iterdir()) if cache_dir.exists() else []
    assert left == [], f"partial cache left behind: {left}"
    # `convae data stats` rejects exactly what prepare rejects, with the same message.
    with pytest.raises(CorpusError) as from_stats:
        corpus_stats(tiny_corpus)
    assert str(from_stats.value) == str(info.value)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_skipped_with_a_counted_warning(tiny_corpus, tmp_path, caplog, case):
    path, _, message = BAD_INPUTS[case](tiny_corpus)
    options = CorpusOptions(on_error="skip", val_fraction=0.0)
    with caplog.at_level(logging.WARNING):
        cache = build_cache(tiny_corpus, tmp_path / "cache", options=options, progress=False)
    assert re.search(r"skipped 1 bad file", caplog.text), f"no counted warning for {case}"
    assert str(path) in caplog.text
    meta = json.loads((cache / "meta.json").read_text())
    assert len(meta["skipped"]) == 1 and str(path) in meta["skipped"][0]
    assert message in meta["skipped"][0]
    # The file is left out: 7 utterances x 6 phones (q deleted) remain.
    assert sum(meta["kept"].values()) + sum(meta["discarded"].values()) == (UTTERANCES - 1) * 6
    stats = corpus_stats(tiny_corpus, options)
    assert sum(s["utterances"] for s in stats["splits"].values()) == UTTERANCES - 1
    assert stats["skipped_files"] == 1


def test_odd_sample_rate_is_blamed_on_the_odd_file(tiny_corpus, tmp_path):
    """The first file in corpus order (TEST sorts before TRAIN) must not set the corpus rate."""
    first = find_utterances(tiny_corpus)[0].audio_path
    assert first == tiny_corpus / "TEST/DR1/MDAB0/SI1027.WAV"
    write_audio(first, np.zeros(6500) + 0.1, sample_rate=8000)
    with pytest.raises(CorpusError, match=re.escape(f"{first}: sample rate 8000 Hz differs")):
        build_cache(tiny_corpus, tmp_path / "cache", progress=False)
    options = CorpusOptions(on_error="skip")
    cache = build_cache(tiny_corpus, tmp_path / "cache", options=options, progress=False)
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["corpus_sample_rate"] == 16000
    assert len(meta["skipped"]) == 1 and str(first) in meta["skipped"][0]


def test_gaps_between_phones_are_tolerated(tmp_path, make_utterance):
    root = tmp_path / "TIMIT"
    for spk in ("TRAIN/DR1/FCJF0", "TRAIN/DR2/MDAC0", "TEST/DR1/MDAB0"):
        make_utterance(root, f"{spk}/SX3", [700, 1000, 900, 800], ["h#", "aa", "s", "h#"], gap=37)
    phn = (root / "TEST/DR1/MDAB0/SX3.PHN").read_text().split()
    assert phn[:6] == ["0", "700", "h#", "737", "1737", "aa"]  # a 37-sample unlabelled gap
    cache = build_cache(root, tmp_path / "cache", options=CorpusOptions(discard_longest=0.0))
    meta = json.loads((cache / "meta.json").read_text())
    assert sum(meta["kept"].values()) == 12 and meta["skipped"] == []


def test_missing_root_and_empty_tree(tmp_path):
    missing = tmp_path / "TIMIT"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"corpus root '{missing}' does not exist")
    ):
        build_cache(missing, tmp_path / "cache", progress=False)
    (missing / "TRAIN" / "DR1").mkdir(parents=True)
    (missing / "TRAIN" / "DR1" / "README.TXT").write_text("not audio")
    with pytest.raises(CorpusError, match=re.escape(f"{missing}: no utterances found")):
        build_cache(missing, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_every_file_bad_is_an_error_even_when_skipping(tiny_corpus, tmp_path):
    for phn in tiny_corpus.rglob("*.PHN"):
        phn.write_text("0 10 nope\n")
    with pytest.raises(CorpusError, match=re.escape(f"{tiny_corpus}: no valid utterances left")):
        build_cache(tiny_corpus, tmp_path / "cache", options=CorpusOptions(on_error="skip"))


def test_every_skipped_file_is_listed(tiny_corpus, tmp_path, caplog):
    """Skip mode names each bad file (not just the first): warning, meta, skipped.tsv, stats."""
    damaged = [nan_samples(tiny_corpus)]  # the audio of VICTIM
    phn = tiny_corpus / "TEST/DR1/MDAB0/SX127.PHN"
    phn.write_text(phn.read_text().replace("2000 3500 s", "2000 1999 s"))
    damaged.append((phn, 3, "segment end 1999 must be after start 2000"))
    wav = tiny_corpus / "TRAIN/DR1/FCJF0/SI1027.WAV"
    wav.write_bytes(wav.read_bytes()[:3000])
    damaged.append((wav, None, "truncated: header announces 6500 samples, file holds 988"))
    options = CorpusOptions(on_error="skip", val_fraction=0.0)
    with caplog.at_level(logging.WARNING):
        cache = build_cache(tiny_corpus, tmp_path / "cache", options=options, progress=False)
    assert "skipped 3 bad file(s)" in caplog.text
    expected = sorted((str(path), line, message) for path, line, message in damaged)
    with open(cache / "skipped.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    listed = sorted((r["path"], int(r["line"]) if r["line"] else None, r["reason"]) for r in rows)
    assert [(p, line) for p, line, _ in listed] == [(p, line) for p, line, _ in expected]
    for (_, _, reason), (path, line, message) in zip(listed, expected, strict=True):
        assert message in reason
        where = f"{path}:{line}: " if line else f"{path}: "
        assert where + reason in caplog.text
    meta = json.loads((cache / "meta.json").read_text())
    assert sorted(meta["skipped"]) == sorted(
        f"{p}:{n}: {r}" if n else f"{p}: {r}" for p, n, r in listed
    )
    stats = corpus_stats(tiny_corpus, options)
    assert stats["skipped_files"] == 3
    assert sorted((s["path"], s["line"], s["reason"]) for s in stats["skipped"]) == listed
