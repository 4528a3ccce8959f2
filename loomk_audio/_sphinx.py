"""pocketsphinx (CMU Sphinx), the English recogniser: an open n-gram LM, or a JSGF grammar.

pocketsphinx 5 bundles its US-English acoustic model, dictionary and LM, so it works
offline with nothing else installed. It decodes as audio arrives (``process_raw`` per
piece), which leaves only the final search passes (~50-70 ms) for the end of the utterance.
A grammar (JSGF text, or a list of phrases made into one) restricts it to known commands:
much more accurate on commands and cheaper (by a third with the local model's whole command
grammar, far more with a few phrases), but it forces any input onto one of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loomk_audio._deps import require

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = [
    "COMMAND_SEARCH_OPTIONS",
    "RESCORE_DISTANCE",
    "SphinxRecognizer",
    "phrases_grammar",
    "word_distance",
    "words_of",
]

_log = logging.getLogger("loomk_audio.stt")
_GRAMMAR_NAME = "commands"
_RESCORE_NAME = "rescore"
_LM_SEARCH = "_default"
COMMAND_SEARCH_OPTIONS: dict[str, Any] = {
    "maxhmmpf": 3000,
    "topn": 2,
    "ds": 2,
    "bestpath": False,
    "beam": 1e-30,
    "pbeam": 1e-30,
    "wbeam": 1e-20,
}
"""The rescoring decoder's search, narrower and cheaper than pocketsphinx's defaults (at
most 3,000 HMMs a frame, the 2 best Gaussians, every other frame, tight beams, no lattice
pass): on flite's voices the same 15 of 15 commands exact, at a real-time factor of 0.10
instead of 0.14. The open model keeps the defaults: narrowed the same way it costs half as
much, but its words on the shipped clips got worse. (pocketsphinx holds the GIL while it
decodes, so all streams' decoding shares one core: the cost decides how many streams keep
up in real time.)"""
RESCORE_SKIP_SAMPLES = 2560
"""The command decoder starts 160 ms into an utterance: a wake-gated utterance begins with
the tail of the wake word, which a grammar would force onto a command's first words."""
RESCORE_DISTANCE = 0.4
"""The most word edits per word the open model's text may be from a command for the
command to be taken instead (two words in five; "what time is a" -> "what time is it")."""


def word_distance(a: Sequence[str], b: Sequence[str]) -> float:
    """Word edits between ``a`` and ``b`` per word of the longer (0 same, 1 nothing shared)."""
    if not a and not b:
        return 0.0
    previous = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other))
            )
        previous = current
    return previous[-1] / max(len(a), len(b))


def words_of(phrase: str) -> list[str]:
    """A phrase's words as the dictionary spells them (lowercase, apostrophes kept)."""
    return re.sub(r"[^\w\s']", " ", phrase.lower()).split()


def phrases_grammar(phrases: Sequence[str]) -> str:
    """A JSGF grammar whose sentences are exactly ``phrases``."""
    alternatives = " | ".join(" ".join(words_of(p)) for p in phrases if words_of(p))
    if not alternatives:
        raise ValueError("a phrase grammar needs at least one phrase with words")
    return f"#JSGF V1.0;\ngrammar {_GRAMMAR_NAME};\npublic <command> = {alternatives};\n"


class SphinxRecognizer:
    """One pocketsphinx decoder: ``start``, ``feed`` 16 kHz int16 samples, ``partial``,
    ``finish`` → the text. Building it loads the model (0.35-0.7 s, ~100 MB): blocking.

    ``grammar`` is JSGF text; ``phrases`` a command list made into one. Phrase words the
    dictionary lacks raise ``ValueError`` naming them (``unknown_words="error"``) or drop
    the phrase with a warning (``"drop"``).

    ``rescore`` (JSGF text), with the open model: a second decoder hears the utterance
    under that grammar as it arrives (from :data:`RESCORE_SKIP_SAMPLES` in), and the command
    it found is taken instead of the open model's text when the two are close (at most
    :data:`RESCORE_DISTANCE` word edits per word): the grammar fixes the open model's slips
    on known commands ("one is twelve times seven"), while speech that is no command keeps
    the open model's words instead of being forced onto the nearest command.
    """

    engine = "pocketsphinx"

    def __init__(
        self,
        *,
        grammar: str | None = None,
        phrases: Sequence[str] = (),
        unknown_words: Literal["error", "drop"] = "error",
        model_dir: Path | None = None,
        language: str = "en-us",
        rescore: str | None = None,
    ) -> None:
        pocketsphinx: Any = require(
            "pocketsphinx", pip="pocketsphinx", purpose="speech recognition"
        )
        options: dict[str, Any] = {"samprate": 16000, "loglevel": "FATAL"}
        if model_dir is not None:
            options.update(
                hmm=str(model_dir / language),
                lm=str(model_dir / f"{language}.lm.bin"),
                dict=str(model_dir / "cmudict-en-us.dict"),
            )
        self.language = language
        self._decoder: Any = pocketsphinx.Decoder(**options)
        if phrases:
            grammar = phrases_grammar(self._known(phrases, unknown_words))
        self.grammar = grammar
        if grammar is not None:
            self._decoder.add_jsgf_string(_GRAMMAR_NAME, grammar)
            self._decoder.activate_search(_GRAMMAR_NAME)
        self.rescore = rescore if grammar is None else None
        self._commands: Any = None  # a second decoder, under the rescore grammar
        if self.rescore is not None:
            self._commands = pocketsphinx.Decoder(**(options | COMMAND_SEARCH_OPTIONS))
            self._commands.add_jsgf_string(_RESCORE_NAME, self.rescore)
            self._commands.activate_search(_RESCORE_NAME)
        self._skip = 0  # samples the command decoder still skips at the utterance's start
        self._started = False

    def _known(self, phrases: Sequence[str], unknown_words: str) -> list[str]:
        kept: list[str] = []
        for phrase in phrases:
            missing = [w for w in words_of(phrase) if self._decoder.lookup_word(w) is None]
            if not missing:
                kept.append(phrase)
            elif unknown_words == "drop":
                _log.warning("phrase %r dropped: %s not in the dictionary", phrase, missing)
            else:
                raise ValueError(
                    f"phrase {phrase!r} has words the pocketsphinx dictionary lacks: "
                    f"{', '.join(missing)} (spell numbers as words; or unknown_words='drop')"
                )
        return kept

    def start(self) -> None:
        """Begin an utterance (ending one still open)."""
        if self._started:
            self._decoder.end_utt()
            if self._commands is not None:
                self._commands.end_utt()
        self._decoder.start_utt()
        if self._commands is not None:
            self._commands.start_utt()
            self._skip = RESCORE_SKIP_SAMPLES
        self._started = True

    def feed(self, samples: Samples) -> None:
        """Decode ``samples`` (16 kHz mono int16) as the next part of the utterance."""
        if len(samples):
            self._decoder.process_raw(samples.astype("<i2").tobytes(), False, False)
            if self._commands is not None:
                kept = samples[self._skip :]
                self._skip -= len(samples) - len(kept)
                if len(kept):
                    self._commands.process_raw(kept.astype("<i2").tobytes(), False, False)

    def partial(self) -> str:
        """The best text so far."""
        hyp = self._decoder.hyp()
        return str(hyp.hypstr) if hyp is not None else ""

    def close(self) -> None:
        """Nothing to let go: the decoder is freed with the object."""

    def finish(self) -> str:
        """End the utterance: the final text ("" when nothing was recognised)."""
        if not self._started:
            return ""
        self._decoder.end_utt()
        self._started = False
        text = self.partial().strip()
        if self._commands is None:
            return text
        self._commands.end_utt()
        hyp = self._commands.hyp()
        command = str(hyp.hypstr).strip() if hyp is not None else ""
        if command and word_distance(words_of(text), words_of(command)) <= RESCORE_DISTANCE:
            return command
        return text
