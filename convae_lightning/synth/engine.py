"""Driving Festival: finding it and its voices, and one ``festival -b`` process per speaker.

The process loads ``festival/synth.scm``, selects the speaker's voice with its pitch and rate, and
synthesises every prompt of the speaker, reporting each finished one on stderr, so that Python
post-processes utterances while Festival goes on (its start-up and voice loading cost more than a
sentence).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from convae_lightning.synth.grammar import FESTIVAL_DATA
from convae_lightning.synth.speakers import VOICES, Reading, SpeakerProfile, check_voice_names

#: Debian packages that provide Festival, the three voices and the US lexicon.
FESTIVAL_PACKAGES: tuple[str, ...] = (
    "festival",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "festlex-cmu",
)
INSTALL_HINT = "sudo apt-get install " + " ".join(FESTIVAL_PACKAGES)

#: What ``synth.scm`` prints on stderr when an utterance's wave and labels are written.
_DONE_MARK = "CONVAE-DONE "


class FestivalNotFoundError(RuntimeError):
    """Festival (or a voice it needs) is not installed."""


def festival_binary() -> str:
    """Path of the ``festival`` executable.

    Raises:
        FestivalNotFoundError: if it is not on PATH (with the packages to install).
    """
    path = shutil.which("festival")
    if path is None:
        raise FestivalNotFoundError(
            "Festival is not installed (no 'festival' on PATH); synthesising a corpus needs it: "
            f"{INSTALL_HINT}. (The corpus embedded in the package needs nothing.)"
        )
    return path


def _evaluate(expression: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one Scheme expression in a batch Festival and return the finished process."""
    with tempfile.TemporaryDirectory(prefix="convae-festival-") as tmp:
        script = Path(tmp) / "query.scm"
        script.write_text(expression + "\n")
        return subprocess.run(
            [festival_binary(), "-b", str(script)], capture_output=True, text=True, timeout=timeout
        )


def installed_voices() -> list[str]:
    """Names of the Festival voices installed on this machine.

    Raises:
        FestivalNotFoundError: if Festival is not installed.
    """
    run = _evaluate('(format t "%l\\n" (voice.list))')
    return sorted(run.stdout.strip().strip("()").split()) if run.returncode == 0 else []


def check_voices(voices: Sequence[str]) -> None:
    """Fail early, naming what is missing, if a voice is unknown or not installed.

    Raises:
        ValueError: if a voice is not one the synthesiser supports.
        FestivalNotFoundError: if Festival or a voice is not installed.
    """
    check_voice_names(voices)
    have = installed_voices()
    missing = [v for v in voices if v not in have]
    if missing:
        raise FestivalNotFoundError(
            f"Festival voice(s) {missing} not installed (installed: {have or 'none'}); "
            f"install them with: {INSTALL_HINT}"
        )


def festival_version() -> str:
    """Festival's version string (recorded in the manifest), or ``"unknown"``."""
    try:
        run = subprocess.run(
            [festival_binary(), "--version"], capture_output=True, text=True, timeout=30
        )
        return run.stdout.strip().splitlines()[0].split(": ", 1)[-1]
    except (OSError, IndexError, subprocess.SubprocessError, FestivalNotFoundError):
        return "unknown"


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _speaker_setup(speaker: SpeakerProfile) -> str:
    """Scheme that selects the speaker's voice with its pitch and rate."""
    voice = VOICES[speaker.voice]
    scale = speaker.formant_scale
    # The vocal-tract resampling multiplies F0 by `scale` and durations by 1/scale: pre-compensate.
    f0 = speaker.f0_mean / scale
    stretch = speaker.rate * scale
    if voice.engine == "diphone":
        return (
            f"(convae:diphone voice_{voice.name} {f0:.1f} {speaker.f0_std / scale:.1f} "
            f"{stretch:.3f})\n"
        )
    return f"(convae:hts voice_{voice.name} {1.0 / stretch:.3f})\n"


def run_festival(
    readings: Sequence[Reading],
    workdir: Path,
    on_utterance: Callable[[int, Path, Path], None],
) -> None:
    """Synthesise one speaker's ``readings`` in one Festival process.

    Calls ``on_utterance(k, wav, lab)`` as soon as reading ``k`` is written: ``wav`` is Festival's
    RIFF output, ``lab`` lists each segment's end (``S label end``) and each word's span
    (``W word start end``) in seconds. An exception from the callback (or Ctrl-C) kills Festival.

    Raises:
        FestivalNotFoundError: if Festival is not installed.
        RuntimeError: if Festival fails (with the end of its messages).
    """
    speaker = readings[0].speaker
    script = [f"(load {_scheme_string(str(FESTIVAL_DATA / 'synth.scm'))})\n"]
    script.append(_speaker_setup(speaker))
    for k, reading in enumerate(readings):
        wav, lab = (_scheme_string(str(workdir / f"{k}.{ext}")) for ext in ("wav", "lab"))
        script.append(f'(convae:say "{k}" {_scheme_string(reading.text)} {wav} {lab})\n')
    (workdir / "batch.scm").write_text("".join(script))
    process = subprocess.Popen(
        [festival_binary(), "-b", str(workdir / "batch.scm")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    messages: list[str] = []
    try:
        for line in process.stderr or ():
            if line.startswith(_DONE_MARK):
                k = int(line.split()[1])
                on_utterance(k, workdir / f"{k}.wav", workdir / f"{k}.lab")
            else:
                messages.append(line.rstrip())
    except BaseException:
        process.kill()  # interrupted or failed: don't let Festival run on for nothing
        raise
    finally:
        code = process.wait()
    if code != 0 or any("SIOD ERROR" in m for m in messages):
        raise RuntimeError(
            f"Festival failed on speaker {speaker.speaker_id} (voice {speaker.voice}, exit code "
            f"{code}): " + "\n".join(messages[-10:])
        )


__all__ = [
    "FESTIVAL_PACKAGES",
    "INSTALL_HINT",
    "FestivalNotFoundError",
    "check_voices",
    "festival_binary",
    "festival_version",
    "installed_voices",
    "run_festival",
]
