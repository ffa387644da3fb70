"""Making TIMIT-layout corpora: the Festival-synthesised speech corpus and toy tone corpora.

Not on the training path: :mod:`convae_lightning.data` reads what this package writes, exactly as
it reads a user's TIMIT copy. ``convae data synth`` and ``python -m convae_lightning.synth`` both
run :func:`synthesize_corpus`.
"""

from convae_lightning.synth.corpus import (
    EMBEDDED_OPTIONS,
    SynthSummary,
    synthesize_corpus,
    synthesize_min_phones,
)
from convae_lightning.synth.engine import INSTALL_HINT, FestivalNotFoundError
from convae_lightning.synth.grammar import Grammar
from convae_lightning.synth.labels import festival_to_timit
from convae_lightning.synth.layout import write_audio, write_utterance
from convae_lightning.synth.speakers import SpeakerProfile, make_speakers
from convae_lightning.synth.toy import write_toy_corpus, write_toy_utterance

__all__ = [
    "EMBEDDED_OPTIONS",
    "INSTALL_HINT",
    "FestivalNotFoundError",
    "Grammar",
    "SpeakerProfile",
    "SynthSummary",
    "festival_to_timit",
    "make_speakers",
    "synthesize_corpus",
    "synthesize_min_phones",
    "write_audio",
    "write_toy_corpus",
    "write_toy_utterance",
    "write_utterance",
]
