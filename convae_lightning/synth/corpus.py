"""A license-free speech corpus in exact TIMIT layout, synthesised with Festival.

TIMIT is licensed, so tests, examples and studies that must run on a fresh machine use this
corpus instead: real (synthetic) speech whose phone boundaries come from Festival's ``Segment``
relation, written as ``TRAIN|TEST/DRn/SPKR/SXnnn.WAV`` (NIST SPHERE, 16 kHz) with ``.PHN``
(TIMIT's 61 labels, in samples), ``.WRD`` and ``.TXT``.

Pipeline per utterance (see ``docs/corpus.md`` for the design and the label mapping):

1. A seeded grammar (:mod:`~convae_lightning.synth.grammar`) makes the sentence.
2. Festival (:mod:`~convae_lightning.synth.engine`; one process per speaker, ``workers`` in
   parallel) synthesises it with the speaker's voice, pitch and rate
   (:mod:`~convae_lightning.synth.speakers`) and writes each segment's end time.
3. Python resamples to 16 kHz, scales the formants, maps Festival's phones onto TIMIT's
   (:mod:`~convae_lightning.synth.labels`) and applies the speaker's channel
   (:mod:`~convae_lightning.synth.render`).

A build runs validate -> resume -> batches -> finalise: the options are checked before anything
is written, the corpus grows in ``OUT.partial`` (finished utterances listed in ``.done``, so a
rerun resumes), and only a complete corpus is renamed to ``OUT``.

Example:
    >>> synthesize_corpus("synthetic_timit", speakers=8, sentences=5, seed=0)  # doctest: +SKIP

or ``convae data synth synthetic_timit --speakers 8 --sentences 5 --seed 0`` (the same function).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from convae_lightning.data.phones import MAP_61_TO_48, PHONES_48
from convae_lightning.synth.engine import check_voices, festival_version, run_festival
from convae_lightning.synth.grammar import Grammar
from convae_lightning.synth.layout import AudioFormat, check_audio_format
from convae_lightning.synth.render import finish_utterance
from convae_lightning.synth.speakers import (
    DEFAULT_VOICES,
    MAX_SENTENCES,
    MAX_SPEAKERS,
    Reading,
    SpeakerProfile,
    check_range,
    make_speakers,
    prompts_for,
)

log = logging.getLogger(__name__)

#: Bumped whenever the same options would produce a different corpus (resume checks it).
SYNTH_VERSION = 1

MANIFEST_NAME = "SYNTH_MANIFEST.json"
DONE_NAME = ".done"

#: Options of the corpus shipped in ``convae_lightning/corpus`` (its manifest's ``command``).
EMBEDDED_OPTIONS: dict[str, object] = {
    "speakers": 24,
    "sentences": 5,
    "seed": 0,
    "audio_format": "flac",
}


@dataclass
class SynthSummary:
    """What a synthesis run produced."""

    root: str
    speakers: int
    train_speakers: int
    test_speakers: int
    utterances: int
    synthesized: int  # utterances made by this run (the rest were resumed)
    phones: int
    seconds: float

    @property
    def utterances_per_second(self) -> float:
        """Synthesis speed of this run."""
        return self.synthesized / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """One line for the console."""
        return (
            f"{self.root}: {self.speakers} speakers ({self.train_speakers} train, "
            f"{self.test_speakers} test), {self.utterances} utterances, {self.phones} phones; "
            f"{self.synthesized} synthesised in {self.seconds:.1f} s "
            f"({self.utterances_per_second:.2f} utterances/s)"
        )


@dataclass(frozen=True)
class _Plan:
    """Everything a validated set of options determines, before anything is written."""

    options: dict[str, object]  # what the manifest records; resuming requires equality
    profiles: list[SpeakerProfile]
    readings: list[list[Reading]]  # one list per speaker: one Festival process each
    seed: int
    audio_format: AudioFormat
    command: str


def synthesize_corpus(
    out: str | os.PathLike,
    speakers: int = 24,
    sentences: int = 10,
    seed: int = 0,
    voices: list[str] | None = None,
    audio_format: AudioFormat = "sphere",
    workers: int = 2,
    word_list: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Synthesise a license-free corpus in TIMIT layout with Festival.

    Needs Festival: sudo apt-get install festival festvox-kallpc16k festvox-kdlpc16k
    festvox-us-slt-hts festlex-cmu. The corpus is built in OUT.partial and renamed to OUT only
    when complete; running the same command again resumes an interrupted run (other options
    restart it).

    Args:
        out: corpus root to create (TRAIN/ and TEST/ go inside).
        speakers: number of speakers, 2..1000 (about a quarter are TEST speakers).
        sentences: sentences per speaker, 1..300.
        seed: seed of the sentences, speakers and noise; the same options give the same corpus.
        voices: Festival voices to rotate over speakers (kal_diphone, ked_diphone,
            cmu_us_slt_arctic_hts); default: all three.
        audio_format: sphere (TIMIT's .WAV), riff (.WAV.wav) or flac.
        workers: Festival processes run in parallel, 1..64.
        word_list: a word list in festival/words.txt's format (default: the shipped one).
        overwrite: replace an existing corpus at OUT made with other options.
        progress: show a progress bar and a summary line.

    Returns:
        A summary (counts, time, utterances per second).

    Raises:
        ValueError: if an argument is out of range or the word list is empty/invalid.
        FestivalNotFoundError: if Festival or a voice is missing.
        FileExistsError: if OUT exists and is not a corpus made with these options (and
            ``overwrite`` is false).
        RuntimeError: if Festival fails.
    """
    plan = _validate(speakers, sentences, seed, voices, audio_format, workers, word_list)
    root = Path(out)
    manifest = _existing_corpus(root, plan, overwrite)
    if manifest is not None:
        summary = _summary(root, manifest, 0, 0.0)
    else:
        partial = root.with_name(root.name + ".partial")
        done = _resume(partial, plan)
        todo = [[r for r in batch if r.key not in done] for batch in plan.readings]
        started = time.perf_counter()
        made = _synthesize(
            [batch for batch in todo if batch], partial, plan, workers, len(done), progress
        )
        summary = _finalise(root, partial, plan, made, time.perf_counter() - started)
    if progress:
        Console(stderr=True).print(summary.describe(), highlight=False, soft_wrap=True)
    return summary


def _validate(
    speakers: int,
    sentences: int,
    seed: int,
    voices: Sequence[str] | None,
    audio_format: AudioFormat,
    workers: int,
    word_list: str | os.PathLike | None,
) -> _Plan:
    """Check every option (and that Festival has the voices) and plan the readings."""
    voices = list(DEFAULT_VOICES if voices is None else voices)
    check_range("speakers", speakers, 2, MAX_SPEAKERS)
    check_range("sentences", sentences, 1, MAX_SENTENCES)
    check_range("workers", workers, 1, 64)
    check_audio_format(audio_format)
    grammar = Grammar.load(word_list)
    profiles = make_speakers(speakers, seed, voices)
    check_voices(voices)
    # The profiles' hash catches changes to the speaker design that keep the same arguments.
    blob = json.dumps([asdict(p) for p in profiles], sort_keys=True).encode()
    options: dict[str, object] = {
        "profiles": hashlib.sha256(blob).hexdigest()[:16],
        "synth_version": SYNTH_VERSION,
        "speakers": speakers,
        "sentences": sentences,
        "seed": seed,
        "voices": voices,
        "audio_format": audio_format,
        "grammar": grammar.digest(),
    }
    ranks: Counter = Counter()
    readings = []
    for speaker in profiles:
        rank = ranks[speaker.split]
        ranks[speaker.split] += 1
        prompts = prompts_for(speaker, rank, sentences)
        readings.append([Reading(speaker, p, grammar.sentence(seed, p)) for p in prompts])
    command = f"convae data synth OUT --speakers {speakers} --sentences {sentences} --seed {seed}"
    if voices != list(DEFAULT_VOICES):
        command += " --voices " + json.dumps(voices)
    command += f" --audio_format {audio_format}"
    return _Plan(options, profiles, readings, seed, audio_format, command)


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _existing_corpus(root: Path, plan: _Plan, overwrite: bool) -> dict | None:
    """The manifest of a complete corpus at ``root`` made with these options, else ``None``.

    Raises:
        FileExistsError: if ``root`` holds something else and ``overwrite`` is false.
    """
    if not root.exists() or not any(root.iterdir()):
        return None
    manifest = _read_manifest(root)
    if manifest and manifest.get("options") == plan.options and manifest.get("complete"):
        log.info("%s is already a complete corpus made with these options", root)
        return manifest
    if not overwrite:
        what = "a corpus made with other options" if manifest else "not a synthetic corpus"
        raise FileExistsError(
            f"{root} exists and is {what}; choose another OUT or pass overwrite=True "
            "(--overwrite true)"
        )
    return None


def _resume(partial: Path, plan: _Plan) -> set[str]:
    """The utterances an interrupted run with the same options finished (a fresh start: none)."""
    manifest = _read_manifest(partial) if partial.exists() else None
    if manifest is not None and manifest.get("options") == plan.options:
        done_file = partial / DONE_NAME
        done = set(done_file.read_text().split()) if done_file.exists() else set()
        log.info("resuming %s: %d utterances already made", partial, len(done))
        return done
    if partial.exists():
        log.info("restarting: %s was made with other options", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    (partial / MANIFEST_NAME).write_text(
        json.dumps({"options": plan.options, "complete": False}, indent=1)
    )
    return set()


def _run_batch(
    readings: Sequence[Reading],
    out: Path,
    plan: _Plan,
    on_done: Callable[[Reading], None],
) -> None:
    """Synthesise one speaker's readings in one Festival process, finishing each as it comes."""

    def finish(k: int, wav: Path, lab: Path) -> None:
        finish_utterance(readings[k], wav, lab, out, plan.seed, plan.audio_format)
        on_done(readings[k])

    with tempfile.TemporaryDirectory(prefix="convae-festival-") as tmp:
        run_festival(readings, Path(tmp), finish)


def _synthesize(
    batches: Sequence[Sequence[Reading]],
    partial: Path,
    plan: _Plan,
    workers: int,
    already: int,
    progress: bool,
) -> int:
    """Run the batches ``workers`` at a time; returns how many utterances this run made."""
    lock = threading.Lock()
    stop = threading.Event()
    made = 0
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    )
    total = already + sum(len(batch) for batch in batches)
    with bar, (partial / DONE_NAME).open("a") as done_file:
        task = bar.add_task("synthesising utterances", total=total, completed=already)

        def on_done(reading: Reading) -> None:
            nonlocal made
            if stop.is_set():
                raise KeyboardInterrupt("synthesis interrupted")
            with lock:
                # Recorded only after all four files are written: a resumed run redoes the rest.
                done_file.write(reading.key + "\n")
                done_file.flush()
                made += 1
                bar.advance(task)

        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(_run_batch, batch, partial, plan, on_done) for batch in batches]
            for future in futures:
                future.result()
        except BaseException:
            # Ctrl-C or a failure: stop the other batches at their next utterance; what is
            # finished stays recorded in .done for the next run to resume from.
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return made


def corpus_phone_counts(root: str | os.PathLike) -> Counter:
    """Phones per 48-class label over all ``.PHN`` files under ``root`` (glottal stops dropped)."""
    counts: Counter = Counter()
    for phn in Path(root).rglob("*"):
        if phn.suffix.upper() == ".PHN":
            for line in phn.read_text().split("\n"):
                parts = line.split()
                if len(parts) == 3 and (label := MAP_61_TO_48[parts[2]]) is not None:
                    counts[label] += 1
    return counts


def _finalise(root: Path, partial: Path, plan: _Plan, made: int, seconds: float) -> SynthSummary:
    """Write the manifest and README, then move the complete corpus into place."""
    counts = corpus_phone_counts(partial)
    manifest = {
        "options": plan.options,
        "complete": True,
        "speakers": [asdict(s) for s in plan.profiles],
        "utterances": sum(len(batch) for batch in plan.readings),
        "phones": sum(counts.values()),
        "phones_per_class": dict(sorted(counts.items())),
        "classes_missing": [p for p in PHONES_48 if counts[p] == 0],
        "festival": festival_version(),
        "command": plan.command,
    }
    (partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    (partial / "README.md").write_text(_readme(manifest))
    (partial / DONE_NAME).unlink()
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    summary = _summary(root, manifest, made, seconds)
    log.info("wrote %s", summary.describe())
    return summary


def _summary(root: Path, manifest: dict, made: int, seconds: float) -> SynthSummary:
    profiles = manifest["speakers"]
    return SynthSummary(
        root=str(root),
        speakers=len(profiles),
        train_speakers=sum(p["split"] == "TRAIN" for p in profiles),
        test_speakers=sum(p["split"] == "TEST" for p in profiles),
        utterances=manifest["utterances"],
        synthesized=made,
        phones=manifest["phones"],
        seconds=seconds,
    )


def _readme(manifest: dict) -> str:
    profiles = manifest["speakers"]
    counts = manifest["phones_per_class"]
    lines = [
        "# Synthetic TIMIT-layout corpus",
        "",
        "Generated by `convae_lightning.synth` with Festival "
        f"({manifest['festival']}); license-free. See docs/corpus.md.",
        "",
        f"- command: `{manifest['command']}`",
        f"- speakers: {len(profiles)} "
        f"({sum(p['split'] == 'TRAIN' for p in profiles)} train, "
        f"{sum(p['split'] == 'TEST' for p in profiles)} test)",
        f"- utterances: {manifest['utterances']}",
        f"- phones (48 classes): {manifest['phones']}",
        f"- classes missing: {', '.join(manifest['classes_missing']) or 'none'}",
        "",
        "| class | phones |",
        "|---|---|",
        *(f"| {label} | {count} |" for label, count in counts.items()),
        "",
    ]
    return "\n".join(lines)


def synthesize_min_phones(
    out: str | os.PathLike,
    min_phones: int = 50_000,
    sentences: int = 10,
    seed: int = 0,
    workers: int | None = None,
    audio_format: AudioFormat = "sphere",
    progress: bool = False,
) -> SynthSummary:
    """Synthesise a corpus with at least ``min_phones`` phones (for benchmarks).

    Picks the number of speakers from a conservative phones-per-utterance estimate, so the
    corpus is a little larger than asked. Uses all CPU cores by default.

    Raises:
        ValueError: if ``min_phones`` is not positive or needs more than 1000 speakers.
        RuntimeError: if the corpus came out smaller than ``min_phones`` (estimate too high).
    """
    check_range("min_phones", min_phones, 1, 10_000_000)
    per_utterance = 40  # measured mean is ~44.5 (with stop closures); 10 % margin
    speakers = max(2, -(-min_phones // (per_utterance * sentences)))
    summary = synthesize_corpus(
        out,
        speakers=speakers,
        sentences=sentences,
        seed=seed,
        audio_format=audio_format,
        workers=workers or os.cpu_count() or 2,
        progress=progress,
        overwrite=True,
    )
    if summary.phones < min_phones:
        raise RuntimeError(f"made {summary.phones} phones, fewer than min_phones={min_phones}")
    return summary


__all__ = [
    "DONE_NAME",
    "EMBEDDED_OPTIONS",
    "MANIFEST_NAME",
    "SynthSummary",
    "corpus_phone_counts",
    "synthesize_corpus",
    "synthesize_min_phones",
]
