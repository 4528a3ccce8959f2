"""``tts.speak``: the voice agent's mouth, offline (Loom's capability, version 0.1.0).

The payload is ``{"text": ...}`` JSON or the text itself in UTF-8; blank text is an OK
result with an empty output and no events. Headers ``voice``, ``rate`` and ``volume``
(each clamped to 0.5-2.0, default 1.0), ``sample_rate`` (resample the speech to it) and
``stream`` (loomk: which audio stream the answer belongs to, for per-stream barge-in)
override the settings for one call; Loom's ``player`` header is ignored (the sink is chosen
when the provider is made).

Each call publishes on topic ``tts``:

* ``tts.start`` (payload the text; metadata ``engine``, ``voice``, ``rate``, ``volume``,
  ``sample_rate``, ``player``/``sink``, ``call_id``, ``stream``);
* then ``tts.done`` (plus ``synthesis_ms``, ``playback_ms``, ``total_ms``, ``wav_path``,
  ``played_ms``, ``first_audio_at``, ``interrupted`` ``true``/``false`` and, when
  interrupted, ``interrupt_reason``), or ``tts.error`` (plus ``error``; and ``timeout_ms``
  when the whole job outlasted the timeout). A synthesis failure is ``ACTION_ERROR``
  ``TTS_SYNTH_ERROR``, a timeout ``ACTION_TIMEOUT`` ``TTS_TIMEOUT``, a device or disk
  failure while playing ``ACTION_ERROR`` ``TTS_PLAYBACK_ERROR`` (loomk's).

``sample_rate`` in ``tts.start`` is the rate asked for (empty: the engine's own); ``tts.done``
and the output give the rate actually played.

Barge-in: every call runs inside its own cancel scope, registered in the provider's
:class:`Speaker`; :meth:`TtsProvider.interrupt` cancels them. An interrupted call is OK with
``interrupted: true``, and a WAV sink's file holds only what was played.

**Echo caveat.** Nothing here cancels echo: with a loudspeaker the microphone hears the
agent, and a pipeline that interrupts on detected speech will cut the agent off with its own
voice. Use headphones, or ignore the microphone (or raise its VAD threshold) while a
``tts.start`` has no ``tts.done`` yet.

Times (``synthesis_ms``, ``first_audio_at``...) are read on the trio clock, so a test's
``MockClock`` decides them.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from loomk import Event
from loomk.actions.types import (
    ActionCall,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    ErrorCode,
    ProviderKind,
)
from loomk.errors import ConfigError
from loomk_audio._playback import (
    DEFAULT_CHUNK_MS,
    DeviceSink,
    Playback,
    Progress,
    Sink,
    Speaker,
    WavSink,
)
from loomk_audio._synth import (
    ENGINES,
    SpeechEngine,
    SynthesisError,
    Synthesized,
    make_engine,
    resample,
)
from loomk_audio.errors import AudioDependencyMissing, AudioDeviceError
from loomk_audio.events import DEFAULT_STREAM, STREAM_KEY, TTS_DONE, TTS_ERROR, TTS_START, TTS_TOPIC
from loomk_audio.pcm import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

__all__ = [
    "CAPABILITY",
    "MAX_RATE",
    "MIN_RATE",
    "OUTPUTS",
    "TTS_PLAYBACK_ERROR",
    "TTS_SYNTH_ERROR",
    "TTS_TIMEOUT",
    "VERSION",
    "DeviceSink",
    "Playback",
    "Publisher",
    "Sink",
    "Speaker",
    "SpeechEngine",
    "SynthesisError",
    "Synthesized",
    "TtsProvider",
    "TtsSettings",
    "WavSink",
    "make_engine",
    "make_sink",
]

CAPABILITY = "tts.speak"
VERSION = "0.1.0"
TTS_SYNTH_ERROR = "TTS_SYNTH_ERROR"
TTS_TIMEOUT = "TTS_TIMEOUT"
TTS_PLAYBACK_ERROR = "TTS_PLAYBACK_ERROR"
MIN_RATE = 0.5
MAX_RATE = 2.0
OUTPUTS = ("auto", "device", "wav")

_SOURCE = "tts"
_DESCRIPTION = "Speak text aloud to the user"
_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "What to say"}},
    "required": ["text"],
}


class Publisher(Protocol):
    """Where events go: a :class:`loomk.EventBus` (``kernel.bus``)."""

    async def publish(self, topic: str, event: Event) -> object:
        """Deliver ``event`` on ``topic``."""
        ...


def _clamp(value: float) -> float:
    return min(MAX_RATE, max(MIN_RATE, value))


@dataclass(frozen=True, slots=True)
class TtsSettings:
    """How the provider speaks.

    * ``engine``: ``auto`` (espeak-ng, else pyttsx3, else flite), ``espeak-ng``, ``pyttsx3``
      or ``flite``; ``voice``: the engine's voice (its default when None: ``en-us``, or
      ``slt`` for flite); ``rate``/``volume``: 1.0 is normal (clamped to 0.5-2.0);
      ``sample_rate``: resample speech to this rate (None: the engine's own);
    * ``output``: ``device`` (a sound device, :class:`AudioDeviceError` if there is none),
      ``wav`` (files in ``out_dir``, default ``<tmp>/loomk-tts``) or ``auto`` (the device
      when there is one, else WAV files); ``device``: part of the device's name;
      ``realtime``: WAV files are written at the pace of speech (False: at once);
      ``chunk_ms``: the playback chunk, the longest an interrupt waits;
    * ``timeout_ms``: the longest one call may take, synthesis and playback together (None:
      no limit); ``topic``: where the ``tts.*`` events go.
    """

    engine: str = "auto"
    voice: str | None = None
    rate: float = 1.0
    volume: float = 1.0
    sample_rate: int | None = None
    output: str = "auto"
    out_dir: Path | str | None = None
    device: str | None = None
    timeout_ms: int | None = 20_000
    realtime: bool = True
    chunk_ms: int = DEFAULT_CHUNK_MS
    topic: str = TTS_TOPIC

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError("engine", f"{self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.output not in OUTPUTS:
            raise ConfigError("output", f"{self.output!r} is not one of {', '.join(OUTPUTS)}")
        for key in ("rate", "volume"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(key, f"must be a number, got {value!r}")
            object.__setattr__(self, key, _clamp(float(value)))
        if self.sample_rate is not None and not (
            MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE
        ):
            raise ConfigError(
                "sample_rate", f"{self.sample_rate} is not {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE}"
            )
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise ConfigError("timeout_ms", f"must be positive (or None), got {self.timeout_ms}")
        if not 1 <= self.chunk_ms <= 1000:
            raise ConfigError("chunk_ms", f"must be 1 to 1000, got {self.chunk_ms}")

    @property
    def wav_dir(self) -> Path:
        """Where WAV files go."""
        if self.out_dir is not None:
            return Path(self.out_dir)
        return Path(tempfile.gettempdir()) / "loomk-tts"


def make_sink(settings: TtsSettings) -> Sink:
    """The sink ``settings.output`` asks for; ``auto`` falls back to WAV files when there is
    no sound device or no PyAudio."""
    if settings.output != "wav":
        try:
            return DeviceSink(settings.device, chunk_ms=settings.chunk_ms)
        except (AudioDeviceError, AudioDependencyMissing):
            if settings.output == "device":
                raise
    return WavSink(settings.wav_dir, realtime=settings.realtime, chunk_ms=settings.chunk_ms)


class _InvalidParams(Exception):
    """A payload or header the call cannot be run with."""


@dataclass(frozen=True, slots=True)
class _Request:
    text: str
    voice: str
    rate: float
    volume: float
    sample_rate: int | None
    stream: str


class TtsProvider:
    """The ``tts.speak`` capability (version 0.1.0, native): speaks text with a speech
    engine into a sink, publishing ``tts.*`` events on ``bus``.

    The engine and the sink are made here (unless given), so a missing engine
    (:class:`AudioDependencyMissing`) or a missing device with ``output='device'``
    (:class:`AudioDeviceError`) fails when the agent starts. Share ``speaker`` between
    providers to interrupt them together. Call :meth:`close` to release a sound device.

    There is no echo cancellation: a loudspeaker the microphone hears makes the agent barge
    in on itself (see the module's echo caveat).
    """

    def __init__(
        self,
        bus: Publisher,
        settings: TtsSettings | None = None,
        *,
        engine: SpeechEngine | None = None,
        sink: Sink | None = None,
        speaker: Speaker | None = None,
    ) -> None:
        self.settings = settings or TtsSettings()
        self.bus = bus
        self.engine = engine or make_engine(self.settings.engine)
        self.sink = sink or make_sink(self.settings)
        self.speaker = speaker or Speaker()
        self._descriptor = CapabilityDescriptor(
            CAPABILITY,
            VERSION,
            ProviderKind.PROVIDER_NATIVE,
            {"desc": _DESCRIPTION, "schema": json.dumps(_SCHEMA)},
        )

    @property
    def descriptor(self) -> CapabilityDescriptor:
        """``tts.speak`` 0.1.0, native."""
        return self._descriptor

    def interrupt(self, reason: str = "barge-in", *, stream: str | None = None) -> int:
        """Cut all speech in progress (or only that of ``stream``) within one chunk; how many
        utterances were cut. Each cut call answers OK with ``interrupted: true``."""
        return self.speaker.interrupt(reason, stream=stream)

    def close(self) -> None:
        """Release the sink's device, if it has one."""
        self.sink.close()

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Speak the call's text; failures are results, never exceptions."""
        try:
            request = self._request(call)
        except _InvalidParams as error:
            return ActionResult.failure(call.id, ErrorCode.INVALID_PARAMS, str(error))
        if not request.text.strip():
            return ActionResult.success(call.id, b"")
        return await self._speak(call.id, request)

    def _request(self, call: ActionCall) -> _Request:
        settings, headers = self.settings, call.headers
        voice = headers.get("voice") or settings.voice or self.engine.default_voice
        sample_rate = _header_number(headers, "sample_rate", settings.sample_rate)
        if sample_rate is not None:
            if sample_rate != int(sample_rate) or not (
                MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE
            ):
                raise _InvalidParams(
                    f"header sample_rate must be a whole number of Hz from {MIN_SAMPLE_RATE} "
                    f"to {MAX_SAMPLE_RATE}, got {headers.get('sample_rate')!r}"
                )
            sample_rate = int(sample_rate)
        return _Request(
            text=_text_of(call.payload),
            voice=voice,
            rate=_clamp(_header_level(headers, "rate", settings.rate)),
            volume=_clamp(_header_level(headers, "volume", settings.volume)),
            sample_rate=sample_rate,
            stream=headers.get(STREAM_KEY) or DEFAULT_STREAM,
        )

    async def _speak(self, call_id: str, request: _Request) -> ActionResult:
        engine, sink, settings = self.engine, self.sink, self.settings
        metadata = {
            "engine": engine.name,
            "voice": request.voice,
            "rate": _number(request.rate),
            "volume": _number(request.volume),
            "sample_rate": str(request.sample_rate or ""),
            "player": sink.name,
            "sink": sink.name,
            "call_id": call_id,
            STREAM_KEY: request.stream,
        }
        started = trio.current_time()
        synthesized_at: float | None = None
        progress: Progress | None = None
        timeout_s = settings.timeout_ms / 1000 if settings.timeout_ms is not None else math.inf
        try:
            with self.speaker.track(call_id, request.stream) as playback:
                await self._publish(TTS_START, request.text, metadata)
                with trio.move_on_after(timeout_s) as timer, playback.scope:
                    speech = await self._synthesize(request)
                    synthesized_at = trio.current_time()
                    metadata = {**metadata, "sample_rate": str(speech.sample_rate)}
                    progress = Progress(speech.sample_rate, audible=playback.audible)
                    await sink.play(speech.samples, progress, label=call_id)
        except SynthesisError as error:
            await self._publish(TTS_ERROR, request.text, {**metadata, "error": str(error)})
            return ActionResult.failure(call_id, TTS_SYNTH_ERROR, str(error))
        except OSError as error:  # the device went away, the disk is full
            message = f"playing the speech failed: {error}"
            await self._publish(TTS_ERROR, request.text, {**metadata, "error": message})
            return ActionResult.failure(call_id, TTS_PLAYBACK_ERROR, message)
        ended = trio.current_time()
        report = _report(metadata, progress, playback, started, synthesized_at, ended)
        if timer.cancelled_caught:
            message = f"speaking took longer than {settings.timeout_ms} ms"
            error_metadata = {**report, "error": message, "timeout_ms": str(settings.timeout_ms)}
            await self._publish(TTS_ERROR, request.text, error_metadata)
            return ActionResult.failure(
                call_id, TTS_TIMEOUT, message, status=ActionStatus.ACTION_TIMEOUT
            )
        await self._publish(TTS_DONE, request.text, report)
        return ActionResult.success(call_id, _output(report, progress))

    async def _synthesize(self, request: _Request) -> Synthesized:
        speech = await self.engine.synthesize(
            request.text, voice=request.voice, rate=request.rate, volume=request.volume
        )
        if request.sample_rate is None or request.sample_rate == speech.sample_rate:
            return speech
        # A worker thread: the first call imports scipy (about half a second).
        samples = await trio.to_thread.run_sync(
            resample, speech.samples, speech.sample_rate, request.sample_rate
        )
        return Synthesized(samples, request.sample_rate)

    async def _publish(self, event_type: str, text: str, metadata: dict[str, str]) -> None:
        event = Event(event_type, text.encode("utf-8"), source=_SOURCE, metadata=metadata)
        await self.bus.publish(self.settings.topic, event)

    def __repr__(self) -> str:
        return f"TtsProvider({self.engine.name} -> {self.sink.name})"


def _text_of(payload: bytes) -> str:
    """The text of a payload: ``{"text": ...}`` JSON, a JSON string, or plain UTF-8."""
    try:
        raw = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _InvalidParams(f"the payload is neither JSON nor UTF-8 text: {error}") from None
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    if isinstance(decoded, dict):
        text = decoded.get("text")
        if not isinstance(text, str):
            raise _InvalidParams('the payload must be {"text": "..."} or the text itself')
        return text
    return decoded if isinstance(decoded, str) else raw


def _header_number(headers: dict[str, str], key: str, default: float | None) -> float | None:
    raw = headers.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _InvalidParams(f"header {key} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise _InvalidParams(f"header {key} must be a finite number, got {raw!r}")
    return value


def _header_level(headers: dict[str, str], key: str, default: float) -> float:
    value = _header_number(headers, key, default)
    return default if value is None else value


def _number(value: float) -> str:
    return f"{value:g}"


def _ms(since: float | None, until: float | None) -> int:
    if since is None or until is None:
        return 0
    return round((until - since) * 1000)


def _report(
    metadata: dict[str, str],
    progress: Progress | None,
    playback: Playback,
    started: float,
    synthesized_at: float | None,
    ended: float,
) -> dict[str, str]:
    """The ``tts.done`` (or timeout ``tts.error``) metadata of a finished call."""
    report = {
        **metadata,
        "synthesis_ms": str(_ms(started, ended if synthesized_at is None else synthesized_at)),
        "playback_ms": str(_ms(synthesized_at, ended)),
        "total_ms": str(_ms(started, ended)),
        "wav_path": str(progress.path) if progress and progress.path else "",
        "played_ms": str(progress.played_ms if progress else 0),
        "first_audio_at": repr(progress.first_audio_at)
        if progress and progress.first_audio_at is not None
        else "",
        "interrupted": "true" if playback.interrupted else "false",
    }
    if playback.interrupted:
        report["interrupt_reason"] = playback.reason
    return report


def _output(report: dict[str, str], progress: Progress | None) -> dict[str, Any]:
    """The OK output: Loom's keys (engine, voice, rate, volume, sample_rate, player, wav_path)
    and loomk's timings and barge-in outcome."""
    return {
        "engine": report["engine"],
        "voice": report["voice"],
        "rate": float(report["rate"]),
        "volume": float(report["volume"]),
        "sample_rate": progress.sample_rate if progress else None,
        "player": report["player"],
        "sink": report["sink"],
        "wav_path": report["wav_path"] or None,
        "synthesis_ms": int(report["synthesis_ms"]),
        "playback_ms": int(report["playback_ms"]),
        "first_audio_at": progress.first_audio_at if progress else None,
        "interrupted": report["interrupted"] == "true",
        "played_ms": int(report["played_ms"]),
    }
