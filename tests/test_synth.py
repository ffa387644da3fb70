"""The Festival-synthesised corpus: layout, labels on the audio, speakers, bad input, resume."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from convae_lightning.cli import main
from convae_lightning.data.phones import PHONES_61
from convae_lightning.data.timit import embedded_corpus_root
from convae_lightning.synth import (
    EMBEDDED_OPTIONS,
    INSTALL_HINT,
    FestivalNotFoundError,
    Grammar,
    engine,
    festival_to_timit,
    make_speakers,
    synthesize_corpus,
)
from convae_lightning.synth import corpus as synth_corpus

needs_festival = pytest.mark.skipif(
    shutil.which("festival") is None, reason="Festival not installed (" + INSTALL_HINT + ")"
)
VOWELS = {"aa", "ae", "ah", "ao", "aw", "ax", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uw"}


def _read_phn(path: Path) -> list[tuple[int, int, str]]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(int(a), int(b), label) for a, b, label in rows]


def _f0(frame: np.ndarray, rate: int = 16000) -> float | None:
    """Autocorrelation F0 of one 40 ms frame, None when unvoiced."""
    frame = frame - frame.mean()
    ac = np.correlate(frame, frame, "full")[len(frame) - 1 :]
    lo, hi = rate // 400, rate // 60
    lag = lo + int(np.argmax(ac[lo:hi]))
    return rate / lag if ac[lag] > 0.3 * ac[0] else None


def _speaker_f0(folder: Path) -> float:
    values = []
    for audio_path in sorted(folder.glob("*.WAV")) + sorted(folder.glob("*.flac")):
        audio, _ = sf.read(audio_path)
        for start, end, label in _read_phn(audio_path.with_suffix(".PHN")):
            if label in VOWELS and end - start >= 800:
                mid = (start + end) // 2
                if (f0 := _f0(audio[mid - 320 : mid + 320])) is not None:
                    values.append(f0)
    assert values, f"no voiced vowel found for {folder}"
    return float(np.median(values))


def _check_layout(root: Path) -> list[Path]:
    phns = sorted(root.glob("*/DR*/*/*.PHN"))
    assert phns, f"no .PHN files under {root}"
    splits = {p.parts[-4] for p in phns}
    assert splits == {"TRAIN", "TEST"}
    for phn in phns:
        assert phn.parts[-2][0] in "MF" and len(phn.parts[-2]) == 5
        assert phn.stem.startswith("SX")
        for suffix in (".WRD", ".TXT"):
            assert phn.with_suffix(suffix).exists()
        rows = _read_phn(phn)
        assert rows[0][0] == 0 and rows[0][2] == "h#" and rows[-1][2] == "h#"
        assert all(a < b for a, b, _ in rows)
        assert all(rows[k][1] == rows[k + 1][0] for k in range(len(rows) - 1))
        assert {label for _, _, label in rows} <= set(PHONES_61)
    return phns


# ------------------------------------------------------------------------ the embedded corpus


def test_embedded_corpus_is_timit_layout() -> None:
    root = embedded_corpus_root()
    phns = _check_layout(root)
    manifest = json.loads((root / synth_corpus.MANIFEST_NAME).read_text())
    assert manifest["complete"] and manifest["options"]["audio_format"] == "flac"
    assert len(phns) == manifest["utterances"]
    for phn in phns:
        audio = phn.with_suffix(".flac")
        info = sf.info(audio)
        assert info.samplerate == 16000
        assert _read_phn(phn)[-1][1] == info.frames
    assert manifest["classes_missing"] == ["dx", "el", "en", "epi", "ix"]
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert size < 10 * 2**20


def test_embedded_corpus_manifest_command_regenerates_it(tmp_path: Path) -> None:
    """The command recorded in the manifest parses (through `convae data synth`'s own parser)
    into EMBEDDED_OPTIONS and the manifest's options, so rerunning it regenerates the corpus."""
    from jsonargparse import ArgumentParser

    manifest = json.loads((embedded_corpus_root() / synth_corpus.MANIFEST_NAME).read_text())
    parser = ArgumentParser()
    parser.add_function_arguments(synthesize_corpus, as_positional=True)
    command = manifest["command"].split()
    assert command[:3] == ["convae", "data", "synth"]
    parsed = parser.parse_args(command[3:])
    assert {key: parsed[key] for key in EMBEDDED_OPTIONS} == EMBEDDED_OPTIONS
    for key in ("speakers", "sentences", "seed", "audio_format"):
        assert manifest["options"][key] == parsed[key]


def test_cli_rejects_a_wrong_value_naming_the_allowed_ones(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", str(tmp_path / "out"), "--audio_format", "mp3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "mp3" in err and "'sphere', 'riff', 'flac'" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ pure functions


def test_grammar_is_reproducible_and_covers_rare_phones() -> None:
    grammar = Grammar.load()
    assert grammar.sentence(0, 123) == grammar.sentence(0, 123)
    texts = {grammar.sentence(0, p) for p in range(100, 200)}
    assert len(texts) > 95


def test_speakers_are_reproducible_and_split() -> None:
    a, b = make_speakers(12, seed=3), make_speakers(12, seed=3)
    assert a == b
    assert make_speakers(13, seed=3)[:12] == a  # adding speakers keeps the others
    assert {s.split for s in a} == {"TRAIN", "TEST"}
    assert len({s.speaker_id for s in make_speakers(1000, seed=0)}) == 1000
    assert {s.split for s in make_speakers(2, seed=0)} == {"TRAIN", "TEST"}


def test_stops_split_into_closure_and_release() -> None:
    rate = 16000
    audio = np.zeros(rate // 2)
    audio[4000:4400] = np.random.default_rng(0).standard_normal(400)  # burst of the "t"
    phones = festival_to_timit([("pau", 0.1), ("t", 0.3), ("pau", 0.5)], audio, rate)
    assert [p.label for p in phones] == ["h#", "tcl", "t", "h#"]
    assert phones[1].end == 4000  # release starts at the burst
    assert phones[-1].end == len(audio)
    with pytest.raises(ValueError, match="no TIMIT label"):
        festival_to_timit([("pau", 0.1), ("xx", 0.3)], audio, rate)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"speakers": 1}, r"speakers must be an integer in \[2, 1000\], got 1"),
        ({"speakers": 5000}, "speakers must be"),
        ({"sentences": 0}, r"sentences must be an integer in \[1, 300\]"),
        ({"sentences": 301}, "sentences must be"),
        ({"workers": 0}, "workers must be"),
        ({"voices": ["nope_diphone"]}, "voices must be a non-empty subset"),
        ({"voices": []}, "voices must be a non-empty subset"),
        ({"audio_format": "mp3"}, "audio_format must be"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synthesize_corpus(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_empty_word_list(tmp_path: Path) -> None:
    empty = tmp_path / "words.txt"
    empty.write_text("# nothing here\nnoun:\n")
    with pytest.raises(ValueError, match="contains no words"):
        synthesize_corpus(tmp_path / "out", word_list=empty)
    partial = tmp_path / "words2.txt"
    partial.write_text("noun: cat dog\n")
    with pytest.raises(ValueError, match=r"lacks .*noun"):
        synthesize_corpus(tmp_path / "out", word_list=partial)


def test_festival_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without festival
    with pytest.raises(FestivalNotFoundError, match="apt-get install festival festvox-kallpc16k"):
        synthesize_corpus(tmp_path / "out", speakers=2, sentences=1)


@needs_festival
def test_voice_not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(engine, "installed_voices", lambda: ["kal_diphone"])
    with pytest.raises(FestivalNotFoundError, match=r"cmu_us_slt_arctic_hts.*not installed"):
        synthesize_corpus(tmp_path / "out", speakers=2, sentences=1)


# ------------------------------------------------------------------------ real Festival


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("festival") is None:
        pytest.skip("Festival not installed (" + INSTALL_HINT + ")")
    out = tmp_path_factory.mktemp("synth") / "corpus"
    summary = synthesize_corpus(out, speakers=4, sentences=2, seed=1, progress=False)
    assert summary.utterances == summary.synthesized == 8
    assert summary.train_speakers == 3 and summary.test_speakers == 1
    return out


@pytest.mark.slow
@needs_festival
def test_synthesised_corpus_layout_and_boundaries(small_corpus: Path) -> None:
    phns = _check_layout(small_corpus)
    assert len(phns) == 8
    silence, speech = [], []
    for phn in phns:
        audio, rate = sf.read(phn.with_suffix(".WAV"))  # NIST SPHERE, read by libsndfile
        assert rate == 16000
        rows = _read_phn(phn)
        assert rows[-1][1] == len(audio)
        for start, end, label in rows:
            rms = float(np.sqrt(np.mean(audio[start:end] ** 2)))
            if label in ("h#", "pau"):
                silence.append(rms)
            elif label in VOWELS:
                speech.append(rms)
        words = [line.split() for line in phn.with_suffix(".WRD").read_text().splitlines()]
        text = phn.with_suffix(".TXT").read_text().split(maxsplit=2)[2].lower()
        assert [w[2] for w in words] == [w.strip(",.?") for w in text.split() if w.strip(",.?")]
    # Boundaries land on the audio: every silence is far quieter than the typical vowel.
    assert max(silence) < 0.25 * float(np.median(speech))


@pytest.mark.slow
@needs_festival
def test_speakers_differ_in_pitch(small_corpus: Path) -> None:
    manifest = json.loads((small_corpus / synth_corpus.MANIFEST_NAME).read_text())
    measured = {}
    for profile in manifest["speakers"]:
        folder = small_corpus / profile["split"] / profile["dialect"] / profile["speaker_id"]
        measured[profile["speaker_id"]] = (_speaker_f0(folder), profile["f0_mean"])
    for f0, target in measured.values():
        assert abs(f0 - target) < 0.15 * target
    values = sorted(f0 for f0, _ in measured.values())
    assert values[-1] > 1.3 * values[0]


@pytest.mark.slow
@needs_festival
def test_datamodule_reads_synthesised_corpus(small_corpus: Path, tmp_path: Path) -> None:
    datamodule = pytest.importorskip("convae_lightning.data.datamodule")
    dm = datamodule.TimitDataModule(
        root=str(small_corpus), cache_dir=str(tmp_path / "cache"), progress=False, val_fraction=0.34
    )
    dm.prepare_data()
    dm.setup("fit")
    phones = sum(len(_read_phn(p)) for p in small_corpus.glob("*/DR*/*/*.PHN"))
    held = sum(len(dm.datasets[s]) for s in ("train", "val", "test"))
    assert 0.8 * phones <= held <= phones


@pytest.mark.slow
@needs_festival
def test_interrupted_synthesis_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "corpus"
    real = synth_corpus.finish_utterance
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth_corpus, "finish_utterance", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthesize_corpus(out, speakers=2, sentences=2, seed=5, workers=1, progress=False)
    assert not out.exists()  # nothing that looks like a finished corpus
    partial = tmp_path / "corpus.partial"
    assert len((partial / synth_corpus.DONE_NAME).read_text().split()) == 2
    monkeypatch.setattr(synth_corpus, "finish_utterance", real)
    summary = synthesize_corpus(out, speakers=2, sentences=2, seed=5, workers=1, progress=False)
    assert summary.synthesized == 2 and summary.utterances == 4
    assert not partial.exists()
    assert len(_check_layout(out)) == 4
    # Same options again: already complete. Other options: refused unless overwrite.
    assert synthesize_corpus(out, speakers=2, sentences=2, seed=5, progress=False).synthesized == 0
    with pytest.raises(FileExistsError, match="other options"):
        synthesize_corpus(out, speakers=2, sentences=1, seed=5, progress=False)


@pytest.mark.slow
@needs_festival
def test_python_m_synth_is_the_convae_data_synth_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`python -m convae_lightning.synth` (run as -m runs it) parses into synthesize_corpus,
    records the equivalent `convae data synth` command and prints a summary line."""
    options = ["--speakers", "2", "--sentences", "1", "--seed", "3", "--audio_format", "flac"]
    monkeypatch.setattr(sys, "argv", ["convae_lightning.synth", str(tmp_path / "a"), *options])
    runpy.run_module("convae_lightning.synth", run_name="__main__")
    assert "2 speakers (1 train, 1 test), 2 utterances" in capsys.readouterr().err
    assert len(_check_layout(tmp_path / "a")) == 2
    manifest = json.loads((tmp_path / "a" / synth_corpus.MANIFEST_NAME).read_text())
    assert manifest["command"] == "convae data synth OUT " + " ".join(options)
