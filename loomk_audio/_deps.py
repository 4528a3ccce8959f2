"""Optional dependencies, imported when first used, with an error that says how to get them.

``import loomk_audio`` loads numpy but no speech engine: openWakeWord, pocketsphinx, Vosk,
PyAudio and the VAD libraries come in when a stage that needs them starts.
"""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType

from loomk_audio.errors import AudioDependencyMissing

__all__ = ["APT_HINT", "PIP_HINT", "require", "require_program"]

PIP_HINT = "pip install 'loomk[audio]'"
APT_HINT = "sudo apt-get install"


def require(module: str, *, pip: str, purpose: str, apt: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`AudioDependencyMissing` naming ``purpose`` and
    the commands that install it (``pip`` is its PyPI name; ``apt`` the Debian packages a
    build or the library itself needs)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        how = f"{PIP_HINT} (or: pip install {pip})"
        if apt:
            how = f"{APT_HINT} {apt}, then {how}"
        raise AudioDependencyMissing(
            f"{purpose} needs the Python package {pip!r}, which cannot be imported "
            f"({error}); install it: {how}",
            package=pip,
        ) from error


def require_program(program: str, *, apt: str, purpose: str) -> str:
    """The path of ``program`` on PATH, or :class:`AudioDependencyMissing` naming the Debian
    package that provides it."""
    found = shutil.which(program)
    if found is None:
        raise AudioDependencyMissing(
            f"{purpose} needs the program {program!r}, which is not on PATH; install it: "
            f"{APT_HINT} {apt}",
            package=apt,
        )
    return found
