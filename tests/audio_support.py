"""Real speech for the audio tests, made offline with flite and espeak-ng (Debian packages).

pocketsphinx understands flite's voices well and espeak-ng's hardly at all, so tests that
assert on recognised words speak with flite; espeak-ng serves wake-word and VAD tests and is
the agent's own voice. Clips are made once per session and cached by their text and voice.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from loomk_audio.pcm import read_wav, write_wav

__all__ = ["Speech", "pad", "silence", "tone", "white_noise"]

RATE = 16_000
Samples = npt.NDArray[np.int16]


class Speech:
    """Makes speech clips in ``folder`` (a session temp folder)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for program in ("flite", "espeak-ng"):
            if shutil.which(program) is None:
                raise RuntimeError(
                    f"the audio tests need {program!r}: sudo apt-get install flite espeak-ng "
                    "(make test installs them)"
                )

    def _path(self, kind: str, voice: str, text: str) -> Path:
        digest = hashlib.sha1(f"{kind}|{voice}|{text}".encode()).hexdigest()[:16]
        return self.folder / f"{kind}-{voice}-{digest}.wav"

    def flite(self, text: str, voice: str = "slt") -> Samples:
        """``text`` spoken by flite (``slt``/``kal16`` are 16 kHz; others are resampled)."""
        path = self._path("flite", voice, text)
        if not path.exists():
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
        return _at_16k(path)

    def espeak(self, text: str, voice: str = "en-us", wpm: int = 160) -> Samples:
        """``text`` spoken by espeak-ng (22,050 Hz, resampled to 16 kHz)."""
        path = self._path("espeak", f"{voice}-{wpm}", text)
        if not path.exists():
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(path), text], check=True
            )
        return _at_16k(path)

    def save(self, name: str, samples: Samples, rate: int = RATE) -> Path:
        """``samples`` written as ``name`` in the folder."""
        return write_wav(self.folder / name, samples, rate)


def _at_16k(path: Path) -> Samples:
    from scipy.signal import resample_poly

    samples, rate, channels = read_wav(path)
    if channels != 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != RATE:
        g = np.gcd(rate, RATE)
        resampled = resample_poly(samples.astype(np.float64), RATE // g, rate // g)
        samples = np.clip(np.rint(resampled), -32768, 32767).astype(np.int16)
    return samples


def silence(seconds: float) -> Samples:
    """Digital silence."""
    return np.zeros(int(RATE * seconds), dtype=np.int16)


def tone(seconds: float, hz: float = 200.0, amplitude: float = 0.5) -> Samples:
    """A sine tone (Loom's VAD tests use 200 Hz at amplitude 0.5)."""
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)


def white_noise(seconds: float, dbfs: float = -40.0, seed: int = 7) -> Samples:
    """White noise at ``dbfs`` RMS, reproducible."""
    rng = np.random.default_rng(seed)
    level = 32767 * 10 ** (dbfs / 20)
    return np.clip(rng.normal(0, level, int(RATE * seconds)), -32768, 32767).astype(np.int16)


def pad(*parts: Samples) -> Samples:
    """The parts one after another."""
    return np.concatenate(parts).astype(np.int16)
