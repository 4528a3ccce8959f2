"""The errors of the audio edge: each names what is wrong and how to fix it."""

from __future__ import annotations

from loomk.errors import LoomkError

__all__ = [
    "AudioDependencyMissing",
    "AudioDeviceError",
    "AudioError",
    "AudioFormatError",
    "AudioModelNotFound",
]


class AudioError(LoomkError):
    """Base class of the audio edge's errors."""

    code = "AUDIO_ERROR"


class AudioDependencyMissing(AudioError, ImportError):
    """A package the audio edge needs is not installed; the message says how to install it.

    ``package`` is the Python distribution (or Debian package) that is missing.
    """

    code = "AUDIO_DEPENDENCY_MISSING"

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message)
        self.package = package


class AudioDeviceError(AudioError, OSError):
    """No usable sound device: none at all, none matching the name asked for, or one that
    cannot be opened with the format asked for."""

    code = "AUDIO_DEVICE_ERROR"


class AudioFormatError(AudioError, ValueError):
    """Audio that cannot be read: not a WAV file, an unsupported sample width, a payload
    that is not whole samples, a sample rate out of range."""

    code = "AUDIO_FORMAT_ERROR"


class AudioModelNotFound(AudioError, FileNotFoundError):
    """A model (wake word, speech recognition) named in the settings is not there."""

    code = "AUDIO_MODEL_NOT_FOUND"
