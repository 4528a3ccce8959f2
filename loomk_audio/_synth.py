"""Speech synthesis engines: text to 16-bit mono PCM in memory, offline.

Three engines, all driving the espeak-ng or flite speech synthesisers Debian packages:

* ``espeak-ng``: the CLI, run per utterance with ``--stdout`` (a WAV stream on stdout, 22,050
  Hz). Speed and amplitude map as Loom maps them: ``-s round(160 x rate)`` clamped to
  80-450 words per minute, ``-a round(100 x volume)`` clamped to 50-200. The text goes in on
  stdin, so text starting with ``-`` is spoken, not read as an option.
* ``pyttsx3``: the espeak-ng library through pyttsx3's ``espeak`` driver, saving to a
  temporary file, one child process per utterance (pyttsx3 2.99 is not reliable when its
  engine is reused, see :class:`Pyttsx3Engine`). Same speed and amplitude mapping.
* ``flite``: the CLI with a 16 kHz voice (``slt`` by default, or ``kal16``). Its speech is
  what pocketsphinx recognises best, which makes it the engine of round-trip tests. Speed is
  flite's ``duration_stretch`` (``1/rate``); flite has no volume, so samples are scaled.

:func:`make_engine` builds one by name and fails at once (:class:`AudioDependencyMissing`
naming the package) when its program or library is missing, so a voice agent that cannot
speak fails when it starts, not at its first answer.
"""

from __future__ import annotations

import ctypes.util
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import trio

from loomk_audio._deps import require, require_program
from loomk_audio.errors import AudioDependencyMissing, AudioError, AudioFormatError
from loomk_audio.pcm import read_wav

__all__ = [
    "ENGINES",
    "EspeakEngine",
    "FliteEngine",
    "Pyttsx3Engine",
    "Samples",
    "SpeechEngine",
    "SynthesisError",
    "Synthesized",
    "espeak_amplitude",
    "espeak_speed",
    "make_engine",
    "resample",
    "scale_volume",
]

Samples = npt.NDArray[np.int16]

ENGINES = ("auto", "espeak-ng", "pyttsx3", "flite")
"""The engine names :func:`make_engine` knows; ``auto`` is the first of the others found."""

_FLITE_16K_VOICES = ("slt", "kal16")


class SynthesisError(AudioError):
    """The engine could not turn the text into speech (an unknown voice, a crash, no audio)."""

    code = "TTS_SYNTH_ERROR"


@dataclass(frozen=True, slots=True)
class Synthesized:
    """Speech in memory: mono int16 ``samples`` at ``sample_rate``."""

    samples: Samples
    sample_rate: int

    @property
    def duration_ms(self) -> float:
        """How long the speech lasts."""
        return len(self.samples) * 1000 / self.sample_rate


class SpeechEngine(Protocol):
    """Turns text into speech in memory."""

    @property
    def name(self) -> str:
        """The engine's name (``espeak-ng``, ``pyttsx3``, ``flite``)."""
        ...

    @property
    def default_voice(self) -> str:
        """The voice used when none is asked for."""
        ...

    async def synthesize(self, text: str, *, voice: str, rate: float, volume: float) -> Synthesized:
        """``text`` spoken by ``voice`` at ``rate`` (1.0 is normal speed) and ``volume``
        (1.0 is the engine's normal level); :class:`SynthesisError` when it cannot be."""
        ...


def espeak_speed(rate: float) -> int:
    """espeak-ng's words per minute for ``rate`` (Loom: ``round(160 x rate)``, 80-450)."""
    return min(450, max(80, round(160 * rate)))


def espeak_amplitude(volume: float) -> int:
    """espeak-ng's amplitude for ``volume`` (Loom: ``round(100 x volume)``, 50-200)."""
    return min(200, max(50, round(100 * volume)))


def resample(samples: Samples, rate_in: int, rate_out: int) -> Samples:
    """Mono ``samples`` from ``rate_in`` to ``rate_out`` Hz (polyphase, scipy)."""
    if rate_in == rate_out or not len(samples):
        return samples
    from scipy.signal import resample_poly

    divisor = math.gcd(rate_in, rate_out)
    out = resample_poly(samples.astype(np.float64), rate_out // divisor, rate_in // divisor)
    resampled: Samples = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
    return resampled


def scale_volume(samples: Samples, factor: float) -> Samples:
    """``samples`` made ``factor`` times louder, clipped to 16 bits."""
    if factor == 1.0:
        return samples
    scaled = np.rint(samples.astype(np.float64) * factor)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def _decode(wav: bytes, engine: str, detail: str = "") -> Synthesized:
    """The mono samples of an engine's WAV output, or :class:`SynthesisError`."""
    try:
        samples, rate, channels = read_wav(wav)
    except AudioFormatError as error:
        message = f"{engine} produced no usable WAV ({error}) {detail}".strip()
        raise SynthesisError(message) from error
    if channels != 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if not len(samples):
        raise SynthesisError(f"{engine} produced no audio {detail}".strip())
    return Synthesized(samples, rate)


async def _run(command: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run an engine's program; :class:`SynthesisError` if it cannot be started."""
    try:
        return await trio.run_process(
            command, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )
    except OSError as error:
        raise SynthesisError(f"cannot run {command[0]}: {error}") from error


def _stderr_of(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stderr or b"").decode("utf-8", "replace").strip()


class EspeakEngine:
    """espeak-ng's command line, one process per utterance (about 20-30 ms)."""

    name = "espeak-ng"
    default_voice = "en-us"

    def __init__(self, program: str | None = None) -> None:
        self.program = program or require_program(
            "espeak-ng", apt="espeak-ng", purpose="text-to-speech with espeak-ng"
        )

    def command(self, *, voice: str, rate: float, volume: float) -> list[str]:
        """The command line that speaks stdin to a WAV on stdout."""
        return [
            self.program,
            "--stdout",
            "--stdin",
            "-b",
            "1",  # the input is UTF-8
            "-v",
            voice,
            "-s",
            str(espeak_speed(rate)),
            "-a",
            str(espeak_amplitude(volume)),
        ]

    async def synthesize(self, text: str, *, voice: str, rate: float, volume: float) -> Synthesized:
        """Run espeak-ng on ``text``; its WAV stream's declared length is bogus (it is a
        stream), so the samples are read as far as they go."""
        result = await _run(
            self.command(voice=voice, rate=rate, volume=volume), stdin=text.encode("utf-8")
        )
        if result.returncode != 0:
            raise SynthesisError(
                f"espeak-ng failed (exit {result.returncode}) with voice {voice!r}: "
                f"{_stderr_of(result)}"
            )
        return _decode(result.stdout, self.name, _stderr_of(result))


_PYTTSX3_CHILD = """
import sys, threading
import pyttsx3
text, path, voice, rate, volume = sys.argv[1:6]
finished = threading.Event()
errors = []
engine = pyttsx3.init(driverName="espeak")
engine.connect("finished-utterance", lambda **_: finished.set())
engine.connect("error", lambda exception=None, **_: errors.append(exception))
engine.setProperty("voice", voice)
engine.setProperty("rate", int(rate))
engine.setProperty("volume", float(volume))
engine.save_to_file(text, path)
engine.runAndWait()
done = finished.wait(60)
if errors:  # pyttsx3 reports a failed command (an unknown voice) and goes on
    sys.exit(f"pyttsx3: {errors[0]}")
sys.exit(0 if done else "pyttsx3: espeak-ng never finished")
"""
"""One utterance through pyttsx3, in a fresh interpreter (see :class:`Pyttsx3Engine`)."""


class Pyttsx3Engine:
    """pyttsx3 with its ``espeak`` driver (the espeak-ng library), saving each utterance to
    a temporary WAV file.

    Each utterance runs in a fresh Python process (about 70 ms) rather than in a worker
    thread: pyttsx3 2.99 drives espeak-ng asynchronously, and an engine reused in one process
    was measured synthesising with the previous utterance's rate, or writing an empty file,
    in a third of the calls. A first utterance per process came out right every time.
    """

    name = "pyttsx3"
    default_voice = "en-us"

    def __init__(self) -> None:
        require(
            "pyttsx3", pip="pyttsx3", apt="libespeak-ng1", purpose="text-to-speech with pyttsx3"
        )
        if not (ctypes.util.find_library("espeak-ng") or ctypes.util.find_library("espeak")):
            raise AudioDependencyMissing(
                "pyttsx3 needs the espeak-ng library, which is not installed; install it: "
                "sudo apt-get install libespeak-ng1",
                package="libespeak-ng1",
            )

    async def synthesize(self, text: str, *, voice: str, rate: float, volume: float) -> Synthesized:
        """Save ``text`` to a WAV file through pyttsx3 in a child process, and read it."""
        with tempfile.TemporaryDirectory(prefix="loomk-tts-") as folder:
            out = Path(folder) / "speech.wav"
            speed, amplitude = str(espeak_speed(rate)), str(espeak_amplitude(volume) / 100)
            result = await _run(
                [sys.executable, "-c", _PYTTSX3_CHILD, text, str(out), voice, speed, amplitude]
            )
            detail = _stderr_of(result)
            if result.returncode != 0 or not out.exists():
                last = detail.splitlines()[-1] if detail else ""
                raise SynthesisError(
                    f"pyttsx3 failed (exit {result.returncode}) with voice {voice!r}: {last}"
                )
            wav = out.read_bytes()
        return _decode(wav, self.name)


class FliteEngine:
    """flite's command line with a 16 kHz voice, one process per utterance (about 50 ms)."""

    name = "flite"
    default_voice = "slt"

    def __init__(self, program: str | None = None) -> None:
        self.program = program or require_program(
            "flite", apt="flite", purpose="text-to-speech with flite"
        )
        self.voices = _flite_voices(self.program)

    def command(self, text: str, *, voice: str, rate: float, out: Path) -> list[str]:
        """The command line that writes ``text`` as a WAV file at ``out``."""
        stretch = 1 / min(2.0, max(0.5, rate))
        return [
            self.program,
            "-voice",
            voice,
            "--setf",
            f"duration_stretch={stretch:.3f}",
            "-t",
            text,
            "-o",
            str(out),
        ]

    async def synthesize(self, text: str, *, voice: str, rate: float, volume: float) -> Synthesized:
        """Run flite on ``text``; an unknown voice is refused here, since flite itself falls
        back to its 8 kHz default without a word."""
        if voice not in self.voices and not Path(voice).is_file():
            raise SynthesisError(
                f"flite has no voice {voice!r}: use one of {', '.join(self.voices)} "
                "(slt and kal16 speak at 16 kHz) or a .flitevox file"
            )
        with tempfile.TemporaryDirectory(prefix="loomk-tts-") as folder:
            out = Path(folder) / "speech.wav"
            result = await _run(self.command(text, voice=voice, rate=rate, out=out))
            detail = _stderr_of(result)
            if result.returncode != 0 or not out.exists():
                raise SynthesisError(f"flite failed (exit {result.returncode}): {detail}")
            wav = out.read_bytes()
        speech = _decode(wav, self.name, detail)
        return Synthesized(scale_volume(speech.samples, volume), speech.sample_rate)


def _flite_voices(program: str) -> tuple[str, ...]:
    """The voices built into ``program`` (``flite -lv``)."""
    try:
        listing = subprocess.run(
            [program, "-lv"], capture_output=True, check=False, timeout=10
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.TimeoutExpired):
        return _FLITE_16K_VOICES
    _, _, names = listing.partition(":")
    return tuple(names.split()) or _FLITE_16K_VOICES


def make_engine(name: str = "auto") -> SpeechEngine:
    """The engine called ``name`` (one of :data:`ENGINES`); ``auto`` takes espeak-ng, else
    pyttsx3, else flite. Raises :class:`AudioDependencyMissing` naming what to install, and
    ``ValueError`` for an unknown name."""
    if name == "espeak-ng":
        return EspeakEngine()
    if name == "pyttsx3":
        return Pyttsx3Engine()
    if name == "flite":
        return FliteEngine()
    if name != "auto":
        raise ValueError(f"unknown speech engine {name!r}: use one of {', '.join(ENGINES)}")
    missing: list[str] = []
    for maker in (EspeakEngine, Pyttsx3Engine, FliteEngine):
        try:
            return maker()
        except AudioDependencyMissing as error:
            missing.append(str(error))
    raise AudioDependencyMissing(
        "no speech engine is installed: " + " | ".join(missing), package="espeak-ng"
    )
