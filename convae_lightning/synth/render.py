"""One Festival output -> one TIMIT utterance: resampling, vocal tract, labels, channel, files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from convae_lightning.data.timit import Segment
from convae_lightning.synth.labels import SAMPLE_RATE, festival_to_timit, read_festival_labels
from convae_lightning.synth.layout import AudioFormat, write_utterance
from convae_lightning.synth.speakers import Reading, SpeakerProfile

#: Samples (150 ms) of leading/trailing h# kept: Festival pads with 0.2-0.5 s of silence, TIMIT's
#: h# are shorter (and shorter files keep the embedded corpus small).
_MAX_EDGE_SILENCE = 2400


def _channel(audio: torch.Tensor, speaker: SpeakerProfile, noise_seed: Sequence[int]) -> np.ndarray:
    """The speaker's microphone/room: band-limiting filter, level, low white noise."""
    x = AF.highpass_biquad(audio, SAMPLE_RATE, speaker.highpass_hz)
    x = AF.lowpass_biquad(x, SAMPLE_RATE, speaker.lowpass_hz)
    x = x.numpy().astype(np.float64)
    peak = np.abs(x).max()
    if peak > 0:
        x *= speaker.peak / peak
    speech = x[np.abs(x) > 0.01 * speaker.peak]
    rms = float(np.sqrt(np.mean(speech**2))) if len(speech) else speaker.peak / 10
    noise = np.random.default_rng(list(noise_seed)).standard_normal(len(x))
    x += noise * rms * 10 ** (-speaker.snr_db / 20)
    return np.clip(x, -1.0, 1.0)


def _voice(wav: Path, speaker: SpeakerProfile) -> torch.Tensor:
    """Festival's wave at the corpus rate, with the speaker's vocal-tract length."""
    raw, rate = sf.read(wav, dtype="float32")
    audio = torch.from_numpy(np.ascontiguousarray(raw))
    if rate != SAMPLE_RATE:
        audio = AF.resample(audio, rate, SAMPLE_RATE)
    if speaker.vtl != 50:
        # Reading the samples as if recorded at vtl/50 x 16 kHz, then resampling to 16 kHz,
        # multiplies every frequency (formants, F0) by vtl/50: a vocal-tract-length change.
        audio = AF.resample(audio, speaker.vtl, 50)
    return audio


def _words(words: Sequence[tuple[str, float, float]], scale: float, length: int) -> list[Segment]:
    spans = []
    for name, start_s, end_s in words:
        start = min(round(start_s / scale * SAMPLE_RATE), length)
        end = min(round(end_s / scale * SAMPLE_RATE), length)
        if end > start:
            spans.append(Segment(start, end, name.lower()))
    return spans


def _trim_edges(phones: list[Segment], length: int) -> tuple[int, int]:
    """``(head, stop)``: the samples to keep so that the edge h# last at most 150 ms."""
    head = max(phones[0].end - _MAX_EDGE_SILENCE, 0) if phones[0].label == "h#" else 0
    tail = max(phones[-1].end - phones[-1].start - _MAX_EDGE_SILENCE, 0)
    tail = tail if phones[-1].label == "h#" and len(phones) > 1 else 0
    return head, length - tail


def finish_utterance(
    reading: Reading, wav: Path, lab: Path, out: Path, seed: int, audio_format: AudioFormat
) -> int:
    """Post-process one Festival output into TIMIT files under ``out``; returns its phone count."""
    speaker = reading.speaker
    audio = _voice(wav, speaker)
    scale = speaker.formant_scale
    segments, words = read_festival_labels(lab)
    phones = festival_to_timit([(name, end / scale) for name, end in segments], audio.numpy())
    word_spans = _words(words, scale, len(audio))
    head, stop = _trim_edges(phones, len(audio))
    phones = [Segment(max(p.start - head, 0), min(p.end, stop) - head, p.label) for p in phones]
    word_spans = [Segment(w.start - head, min(w.end, stop) - head, w.label) for w in word_spans]
    noisy = _channel(audio[head:stop], speaker, (seed, speaker.index, reading.prompt, 0xC4A))
    write_utterance(
        out,
        speaker.split,
        speaker.dialect,
        speaker.speaker_id,
        reading.sentence,
        noisy,
        phones,
        words=word_spans,
        text=reading.text,
        sample_rate=SAMPLE_RATE,
        audio_format=audio_format,
    )
    return len(phones)


__all__ = ["finish_utterance"]
