"""PortAudio (through PyAudio) for the microphone source: devices, formats, a blocking stream.

Everything here blocks, so :class:`~loomk_audio.sources.MicSource` calls it from worker
threads. Reads are blocking ``stream.read`` calls, never a PortAudio callback: a callback that
waits for trio deadlocks against ``stream.close()``, which waits for the callback (notes §6).

On a machine without a sound card, PortAudio's start-up makes ALSA and JACK print dozens of
lines (``ALSA lib confmisc.c ... cannot find card '0'``, ``jack server is not running``) to
the process's stderr; :func:`quiet_native_logging` gives both libraries a handler that drops
them, so the one error that matters, :class:`~loomk_audio.errors.AudioDeviceError`, is seen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from typing import Any

from loomk_audio._deps import require
from loomk_audio.errors import AudioDeviceError

__all__ = [
    "InputDevice",
    "OpenMic",
    "choose_device",
    "input_devices",
    "open_mic",
    "open_portaudio",
    "quiet_native_logging",
]

HOW_TO_FIX = (
    "connect a microphone (or check that ALSA/PulseAudio can see it), name one with "
    "--device NAME, or read a WAV file instead with --wav FILE"
)
_FALLBACK_RATES = (48_000, 44_100, 32_000, 16_000)

# ALSA: void (*)(const char *file, int line, const char *function, int err, const char *fmt, ...)
_AlsaHandler = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
# JACK: void (*)(const char *message)
_JackHandler = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_handlers: list[object] = []  # the installed callbacks, kept alive for the process's life
_quiet_lock = threading.Lock()


def _drop_alsa(file: bytes, line: int, function: bytes, err: int, fmt: bytes) -> None:
    """ALSA's message, dropped."""


def _drop_jack(message: bytes) -> None:
    """JACK's message, dropped."""


def quiet_native_logging() -> None:
    """Stop ALSA and JACK printing to stderr (once per process; a no-op where either
    library is missing)."""
    with _quiet_lock:
        if _handlers:
            return
        alsa_handler = _AlsaHandler(_drop_alsa)
        jack_handler = _JackHandler(_drop_jack)
        _handlers.extend((alsa_handler, jack_handler))
        asound = _load("asound")
        if asound is not None:
            asound.snd_lib_error_set_handler(alsa_handler)
        jack = _load("jack")
        if jack is not None:
            jack.jack_set_error_function(jack_handler)
            jack.jack_set_info_function(jack_handler)


def _load(name: str) -> Any:
    found = ctypes.util.find_library(name)
    if found is None:
        return None
    try:
        return ctypes.CDLL(found)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class InputDevice:
    """A device PortAudio can record from."""

    index: int
    name: str
    max_input_channels: int
    default_sample_rate: int
    host_api: str


def open_portaudio(*, quiet: bool = True) -> Any:
    """A ``pyaudio.PyAudio`` (PortAudio initialised: it reads the ALSA configuration now);
    the caller must ``terminate()`` it."""
    pyaudio = require(
        "pyaudio", pip="pyaudio", apt="portaudio19-dev", purpose="recording from a microphone"
    )
    if quiet:
        quiet_native_logging()
    return pyaudio.PyAudio()


def input_devices(portaudio: Any) -> list[InputDevice]:
    """The devices of an open PortAudio that have input channels, in PortAudio's order."""
    devices = []
    for index in range(portaudio.get_device_count()):
        info = portaudio.get_device_info_by_index(index)
        if int(info["maxInputChannels"]) <= 0:
            continue
        host_api = portaudio.get_host_api_info_by_index(info["hostApi"])["name"]
        devices.append(
            InputDevice(
                index=int(info["index"]),
                name=str(info["name"]),
                max_input_channels=int(info["maxInputChannels"]),
                default_sample_rate=int(info["defaultSampleRate"]),
                host_api=str(host_api),
            )
        )
    return devices


def _default_input_index(portaudio: Any) -> int | None:
    try:
        return int(portaudio.get_default_input_device_info()["index"])
    except OSError:  # "No Default Input Device Available"
        return None


def choose_device(
    devices: list[InputDevice], wanted: str | None, default_index: int | None = None
) -> InputDevice:
    """The device ``wanted`` names (a case-insensitive substring of its name, as Loom's
    ``MIC_DEVICE``; an exact name wins over a partial one), else the default input device,
    else the first; :class:`AudioDeviceError` when there is none or none matches."""
    if not devices:
        raise AudioDeviceError(f"no audio input device: PortAudio finds none; {HOW_TO_FIX}")
    if wanted is None:
        for device in devices:
            if device.index == default_index:
                return device
        return devices[0]
    needle = wanted.casefold()
    exact = [d for d in devices if d.name.casefold() == needle]
    partial = [d for d in devices if needle in d.name.casefold()]
    if exact or partial:
        return (exact or partial)[0]
    names = ", ".join(repr(d.name) for d in devices)
    raise AudioDeviceError(
        f"no audio input device matches {wanted!r}; the input devices are: {names}"
    )


class OpenMic:
    """A started PortAudio input stream (16-bit) and what it was opened with."""

    def __init__(
        self, portaudio: Any, stream: Any, device: InputDevice, rate: int, channels: int
    ) -> None:
        self._portaudio = portaudio
        self._stream = stream
        self.device = device
        self.sample_rate = rate
        self.channels = channels
        self.closed = False

    def read(self, frames: int) -> bytes:
        """The next ``frames`` frames (blocks until the device has them; an overflow loses
        audio rather than raising). :class:`AudioDeviceError` if the device fails."""
        try:
            return bytes(self._stream.read(frames, exception_on_overflow=False))
        except OSError as error:
            raise AudioDeviceError(
                f"reading from audio input device {self.device.name!r} failed: {error}"
            ) from error

    def close(self) -> None:
        """Stop and close the stream and release PortAudio (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._stream.stop_stream()
            self._stream.close()
        finally:
            self._portaudio.terminate()


def open_mic(
    wanted: str | None,
    sample_rate: int,
    channels: int,
    frames_per_buffer: int,
    *,
    quiet: bool = True,
) -> OpenMic:
    """Open and start an input stream on the chosen device: at ``sample_rate`` and
    ``channels`` if the device takes them, else at the nearest it does (the stages resample
    and downmix whatever comes); :class:`AudioDeviceError` when nothing can be opened.
    ``quiet`` silences ALSA's and JACK's stderr (see :func:`quiet_native_logging`)."""
    portaudio = open_portaudio(quiet=quiet)
    try:
        device = choose_device(input_devices(portaudio), wanted, _default_input_index(portaudio))
        pyaudio = require("pyaudio", pip="pyaudio", purpose="recording from a microphone")
        rate, chans = _supported_format(portaudio, pyaudio.paInt16, device, sample_rate, channels)
        try:
            stream = portaudio.open(
                format=pyaudio.paInt16,
                channels=chans,
                rate=rate,
                input=True,
                input_device_index=device.index,
                frames_per_buffer=frames_per_buffer,
                start=True,
            )
        except (OSError, ValueError) as error:
            raise AudioDeviceError(
                f"cannot open audio input device {device.name!r} at {rate} Hz, {chans} "
                f"channel(s): {error}; {HOW_TO_FIX}"
            ) from error
    except BaseException:
        portaudio.terminate()
        raise
    return OpenMic(portaudio, stream, device, rate, chans)


def _supported_format(
    portaudio: Any, sample_format: int, device: InputDevice, rate: int, channels: int
) -> tuple[int, int]:
    """The first (rate, channels) the device takes: those asked for, then mono or stereo at
    the asked rate, then common rates and the device's own."""
    channel_choices = [c for c in (channels, 1, 2) if c <= device.max_input_channels]
    rate_choices = [rate, *_FALLBACK_RATES, device.default_sample_rate]
    for candidate_rate in dict.fromkeys(rate_choices):
        for candidate_channels in dict.fromkeys(channel_choices):
            try:
                if portaudio.is_format_supported(
                    candidate_rate,
                    input_device=device.index,
                    input_channels=candidate_channels,
                    input_format=sample_format,
                ):
                    return candidate_rate, candidate_channels
            except ValueError:
                continue
    return rate, min(channels, max(device.max_input_channels, 1))  # let open() say why not
