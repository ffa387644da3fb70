"""Finding and reading TIMIT-layout corpora (LDC SPHERE, lowercase, RIFF, FLAC) and .PHN files."""

from __future__ import annotations

import io
import re
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import corrupt_flac_frames, write_streamed_flac
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convae_lightning.data.timit import (
    SPHERE_HEADER_BYTES,
    CorpusError,
    Segment,
    audio_info,
    find_utterances,
    read_audio,
    read_phone_table,
    read_phones,
)
from convae_lightning.synth.layout import write_audio
from convae_lightning.synth.toy import write_toy_corpus

SPEAKERS = {"TRAIN": 2, "TEST": 1}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same toy corpus (same seed, so the same samples) in every supported layout."""
    base = tmp_path_factory.mktemp("layouts")
    out = {}
    for fmt, lower in (("sphere", False), ("sphere", True), ("riff", False), ("riff", True)):
        out[fmt, lower] = write_toy_corpus(
            base / f"{fmt}_{lower}" / ("timit" if lower else "TIMIT"),
            SPEAKERS,
            sentences=2,
            phones_per_sentence=6,
            audio_format=fmt,
            lowercase=lower,
        )
    out["flac", False] = write_toy_corpus(
        base / "flac" / "TIMIT", SPEAKERS, sentences=2, phones_per_sentence=6, audio_format="flac"
    )
    return out


LAYOUTS = [("sphere", False), ("sphere", True), ("riff", False), ("riff", True), ("flac", False)]


@pytest.mark.parametrize(("fmt", "lower"), LAYOUTS)
def test_every_layout_finds_the_same_utterances(layouts, fmt, lower):
    root = layouts[fmt, lower]
    utterances = find_utterances(root)
    reference = find_utterances(layouts["sphere", False])
    assert [u.utterance_id for u in utterances] == [u.utterance_id for u in reference]
    # 3 speakers x 2 SX sentences; SA1 dropped by default.
    assert len(utterances) == 6
    assert {u.kind for u in utterances} == {"SX"}
    assert {u.split for u in utterances} == {"train", "test"}
    for u in utterances:
        assert u.dialect.startswith("DR") and u.speaker.isupper() and u.sentence.isupper()
        assert u.audio_path.is_file() and u.phn_path.is_file()
        name = u.audio_path.name
        expected = {"sphere": ".wav", "riff": ".wav.wav", "flac": ".flac"}[fmt]
        assert name.lower() == u.sentence.lower() + expected
        assert u.phn_path.name == (u.sentence.lower() + ".phn" if lower else u.sentence + ".PHN")


@pytest.mark.parametrize(("fmt", "lower"), LAYOUTS)
def test_every_layout_reads_identical_samples(layouts, fmt, lower):
    reference = find_utterances(layouts["sphere", False])
    for u, ref in zip(find_utterances(layouts[fmt, lower]), reference, strict=True):
        audio, rate = read_audio(u.audio_path)
        expected, _ = sf.read(str(ref.audio_path), dtype="float32")
        assert rate == 16000 and audio.dtype == np.float32
        np.testing.assert_array_equal(audio, expected)
        assert read_phones(u.phn_path, len(audio)) == read_phones(ref.phn_path)


def test_include_sa_keeps_sa_sentences(layouts):
    root = layouts["sphere", False]
    with_sa = find_utterances(root, include_sa=True)
    assert len(with_sa) == 9
    assert sorted(u.sentence for u in with_sa if u.kind == "SA") == ["SA1"] * 3


@pytest.mark.parametrize("lower", [False, True])
def test_root_may_be_a_folder_above_the_corpus(layouts, lower):
    root = layouts["sphere", lower]
    above = root.parent  # e.g. /data holding TIMIT/ (or timit/)
    assert [u.audio_path for u in find_utterances(above)] == [
        u.audio_path for u in find_utterances(root)
    ]


def test_ldc_sphere_file_is_real_nist_with_1024_byte_header(layouts):
    u = find_utterances(layouts["sphere", False])[0]
    raw = u.audio_path.read_bytes()
    assert raw.startswith(b"NIST_1A\n   1024\n")
    header = raw[:SPHERE_HEADER_BYTES].decode("ascii")
    count = int(re.search(r"sample_count -i (\d+)", header).group(1))
    assert len(raw) == SPHERE_HEADER_BYTES + 2 * count
    info = sf.info(str(u.audio_path))
    assert (info.format, info.subtype, info.samplerate, info.frames) == (
        "NIST",
        "PCM_16",
        16000,
        count,
    )
    assert audio_info(u.audio_path).num_samples == count
    # The .PHN ends where the audio ends; .WRD and .TXT sit beside it, as in the LDC release.
    assert read_phones(u.phn_path)[-1].end == count
    for suffix in (".WRD", ".TXT"):
        assert u.audio_path.with_suffix(suffix).is_file()
    # Samples equal the int16 payload after the header.
    payload = np.frombuffer(raw[SPHERE_HEADER_BYTES:], dtype="<i2")
    np.testing.assert_allclose(read_audio(u.audio_path)[0], payload / 32768.0, atol=1e-7)


def test_sphere_copy_is_preferred_over_riff_copy(tmp_path, layouts):
    root = tmp_path / "TIMIT"
    shutil.copytree(layouts["sphere", False], root)
    for wav in root.rglob("*.WAV"):
        audio, rate = sf.read(str(wav), dtype="int16")
        sf.write(str(wav) + ".wav", audio, rate, subtype="PCM_16", format="WAV")
    utterances = find_utterances(root)
    assert len(utterances) == 6
    assert all(u.audio_path.suffix == ".WAV" for u in utterances)


def test_read_phones_parses_offsets_labels_and_tolerates_gaps(tmp_path):
    phn = tmp_path / "SI1.PHN"
    phn.write_text("0 100 h#\n100 250 AX-H\n\n260 400 q\n400 520 zh\n")  # gap at 250..260
    assert read_phones(phn, num_samples=520) == [
        Segment(0, 100, "h#"),
        Segment(100, 250, "ax-h"),
        Segment(260, 400, "q"),
        Segment(400, 520, "zh"),
    ]
    starts, ends, labels = read_phone_table(phn, num_samples=520)  # the cache build's reader
    assert starts.tolist() == [0, 100, 260, 400] and ends.tolist() == [100, 250, 400, 520]
    assert labels == ["h#", "ax-h", "q", "zh"] and starts.dtype == ends.dtype == np.int64


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("0 100 h#\n100 200\n", 2, "expected 'start end label', got 2 fields"),
        ("0 100 h#\n100 200 aa extra\n", 2, "got 4 fields"),
        ("0 100 h#\n100 2x0 aa\n", 2, "sample offsets must be integers"),
        ("0 100.5 h#\n", 1, "sample offsets must be integers"),
        ("0 100 h#\n200 200 aa\n", 2, "segment end 200 must be after start 200"),
        ("0 100 h#\n300 200 aa\n", 2, "segment end 200 must be after start 300"),
        ("0 100 h#\n100 200 aa\n200 1200 s\n", 3, "lies beyond the audio"),
        ("0 100 h#\n100 200 aa\n200 300 xyz\n", 3, "unknown phone label 'xyz'"),
        ("0 100 h#\n100 200 sil\n", 2, "unknown phone label 'sil'"),
    ],
)
@pytest.mark.parametrize("reader", [read_phones, read_phone_table])
def test_bad_phn_lines_name_file_and_line(tmp_path, content, line, message, reader):
    phn = tmp_path / "SX9.PHN"
    phn.write_text(content)
    with pytest.raises(CorpusError, match=re.escape(f"{phn}:{line}: ") + ".*" + re.escape(message)):
        reader(phn, num_samples=1000)


@pytest.mark.parametrize("reader", [read_phones, read_phone_table])
def test_empty_phn_is_an_error(tmp_path, reader):
    phn = tmp_path / "SX9.PHN"
    phn.write_text("\n")
    with pytest.raises(CorpusError, match=re.escape(f"{phn}: no phone segments")):
        reader(phn)


def test_truncated_sphere_is_detected(tmp_path):
    path = tmp_path / "SI1.WAV"
    write_audio(path, np.zeros(4000) + 0.1)
    path.write_bytes(path.read_bytes()[: SPHERE_HEADER_BYTES + 2 * 1000])
    with pytest.raises(CorpusError, match=re.escape(f"{path}: truncated: header announces 4000")):
        audio_info(path)


def test_random_bytes_are_not_audio(tmp_path):
    path = tmp_path / "SI1.WAV"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(CorpusError, match=re.escape(f"{path}: not a readable audio file")):
        audio_info(path)
    with pytest.raises(CorpusError, match=re.escape(f"{path}: not a readable audio file")):
        read_audio(path)


def test_missing_root_and_empty_tree(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        find_utterances(missing)
    empty = tmp_path / "TIMIT"
    (empty / "TRAIN" / "DR1" / "FCJF0").mkdir(parents=True)
    with pytest.raises(CorpusError, match=re.escape(f"{empty}: no utterances found")):
        find_utterances(empty)


def test_wav_without_phn(tmp_path, layouts):
    root = tmp_path / "TIMIT"
    shutil.copytree(layouts["sphere", False], root)
    victim = find_utterances(root)[1]
    victim.phn_path.unlink()
    with pytest.raises(
        CorpusError, match=re.escape(f"{victim.audio_path}: audio file has no .PHN")
    ):
        find_utterances(root)
    listed = find_utterances(root, on_error="skip")
    # Listed without labels, so that indexing counts it as skipped (test_data_errors).
    assert len(listed) == 6
    assert [u.audio_path for u in listed if u.phn_path is None] == [victim.audio_path]


# --------------------------------------------------------------------------- damaged audio


def test_unknown_length_stream_is_a_corpus_error_not_a_huge_array(tmp_path):
    path = write_streamed_flac(tmp_path / "SX1.flac", np.full(3000, 1000, np.int16))
    assert sf.info(str(path)).frames == 2**63 - 1
    for read in (audio_info, read_audio):
        with pytest.raises(CorpusError, match=re.escape(f"{path}: the header announces no length")):
            read(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_a_corpus_error(tmp_path, bad):
    path = tmp_path / "SX1.WAV.wav"
    audio = np.full(4000, 0.1, dtype=np.float32)
    audio[1234] = bad
    sf.write(str(path), audio, 16000, subtype="FLOAT")
    assert audio_info(path).num_samples == 4000  # the header is fine: only a decode finds it
    with pytest.raises(
        CorpusError,
        match=re.escape(f"{path}: 1 NaN or infinite sample(s), the first at sample 1234"),
    ):
        read_audio(path)


def test_frames_that_do_not_decode_are_a_corpus_error(tmp_path):
    path = tmp_path / "SX1.flac"
    sf.write(str(path), (np.sin(np.arange(20000) / 5) * 9000).astype(np.int16), 16000)
    corrupt_flac_frames(path)
    assert audio_info(path).num_samples == 20000
    with pytest.raises(CorpusError, match=re.escape(f"{path}: ")):
        read_audio(path)


@cache
def _fuzz_bases() -> dict[str, bytes]:
    """Small valid files of every kind the reader meets (name -> bytes, the suffix matters)."""
    audio = (np.sin(np.arange(2000) / 7) * 8000).astype(np.int16)
    bases = {}
    for name, container, subtype, data in (
        ("a.WAV", "NIST", "PCM_16", audio),
        ("a.WAV.wav", "WAV", "PCM_16", audio),
        ("f.WAV.wav", "WAV", "FLOAT", audio / 32768.0),
        ("a.flac", "FLAC", "PCM_16", audio),
    ):
        buffer = io.BytesIO()
        sf.write(buffer, data, 16000, format=container, subtype=subtype)
        bases[name] = buffer.getvalue()
    return bases


#: Values that break length and rate arithmetic when written into a header field.
EXTREMES = [0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**36 - 1, 2**63 - 1, 2**64 - 1]


@st.composite
def damaged_audio(draw) -> tuple[str, bytes]:
    """A valid file with header fields overwritten, bytes flipped and/or cut short; or noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(sorted(_fuzz_bases()))), draw(st.binary(max_size=2048))
    name = draw(st.sampled_from(sorted(_fuzz_bases())))
    data = bytearray(_fuzz_bases()[name])
    header = 1100 if name.endswith(".WAV") else 120
    for _ in range(draw(st.integers(0, 3))):  # a numeric field: any width, either byte order
        width = draw(st.sampled_from([1, 2, 3, 4, 8]))
        value = draw(st.sampled_from(EXTREMES) | st.integers(0, 2**64 - 1)) % 256**width
        offset = draw(st.integers(0, header))
        data[offset : offset + width] = value.to_bytes(
            width, draw(st.sampled_from(["little", "big"]))
        )
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if name.endswith(".WAV") and draw(st.booleans()):  # a SPHERE text field
        text = data[:1024].decode("ascii", "replace")
        field = draw(
            st.sampled_from(["sample_count", "sample_rate", "channel_count", "sample_n_bytes"])
        )
        number = draw(st.sampled_from(EXTREMES) | st.integers(-5, 10**20))
        text = re.sub(rf"{field} -i -?\d+", f"{field} -i {number}", text)
        data[:1024] = text.encode("ascii", "replace")[:1024].ljust(1024, b" ")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return name, bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# CI runs the profile's example count (hypothesis's default, 100); the big run is
# `pytest tests/test_data_timit.py -k fuzz --hypothesis-profile fuzz` (conftest: 240,000 inputs).
@settings(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=damaged_audio())
def test_fuzzed_audio_raises_only_corpus_errors_naming_the_file(fuzz_dir, case):
    name, data = case
    path = fuzz_dir / name
    path.unlink(missing_ok=True)  # ext4 flushes a file truncated and rewritten: 1-8 ms each
    path.write_bytes(data)
    for read in (audio_info, read_audio):
        try:
            result = read(path)
        except CorpusError as error:
            assert error.path == path
            continue
        if read is read_audio:
            samples, rate = result
            assert samples.dtype == np.float32 and samples.ndim == 1 and len(samples) > 0
            assert rate > 0 and np.isfinite(samples).all()
