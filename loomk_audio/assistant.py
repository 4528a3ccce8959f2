"""The voice assistant: a query in, an answer spoken, with the tools it needs in between.

:class:`VoiceAssistant` takes ``user.query`` events (the wake stage makes them from the
transcript of what followed the wake word), asks the kernel's router which model answers
(the local intent model offline; an OpenAI-compatible endpoint when one is configured),
carries out the answer's actions through the broker (``lights.set``, ``timer.set``, ...) and
speaks the answer with ``tts.speak``. Each turn is published as ``voice.turn`` on ``voice``
(transcript, routing decision, answer, WAV path) with its per-stage latencies, which also go
to ``voice.latency`` events and :class:`~loomk_audio.stats.VoiceStats`.

:class:`BargeIn` is the other half of talking with people: speech that starts while the agent
is speaking cancels the speech in progress. It asks the TTS provider to cancel the cancel
scopes of every playback in progress (kernel-wide), so the ``tts.speak`` call returns at once,
marked ``interrupted``, and the assistant is free for what the person says next.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol

import trio

from loomk import Agent, Context, Event, Topic
from loomk.llm import event_text
from loomk_audio.events import (
    AUDIO_END,
    QUERY_TOPIC,
    SPEECH_START,
    STREAM_KEY,
    USER_QUERY,
    VAD_TOPIC,
    VOICE_LATENCY,
    VOICE_TOPIC,
    WAKE_DETECTED,
    WAKE_TOPIC,
    stream_of,
)
from loomk_audio.home import TIMER_DONE, TIMERS_TOPIC
from loomk_audio.stats import VoiceStats

__all__ = [
    "BARGE_IN",
    "VOICE_TURN",
    "BargeIn",
    "BargeInMode",
    "Interruptible",
    "VoiceAssistant",
]

VOICE_TURN = "voice.turn"
BARGE_IN = "voice.barge_in"
SPEAK_TIMEOUT_S = 60.0
BargeInMode = Literal["speech", "wake", "off"]


class Interruptible(Protocol):
    """What barge-in needs of the speech output: cut every playback in progress."""

    def interrupt(self, reason: str = ...) -> int:
        """Cancel the speech in progress; how many playbacks were cut."""
        ...


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class VoiceAssistant(Agent):
    """Answers ``user.query`` events aloud (see the module notes); an ``audio_end`` that
    reaches it (a stream fully handled) is passed on to ``voice``, and a ``timer.done`` on
    ``home.timers`` is announced."""

    topics = (
        Topic(QUERY_TOPIC, event_types=[USER_QUERY, AUDIO_END]),
        Topic(TIMERS_TOPIC, event_types=[TIMER_DONE]),
    )
    capabilities = ("voice.assistant",)

    def __init__(
        self,
        agent_id: str = "voice.assistant",
        *,
        stats: VoiceStats | None = None,
        speak_timeout_s: float = SPEAK_TIMEOUT_S,
        query_topic: str = QUERY_TOPIC,
        voice_topic: str = VOICE_TOPIC,
    ) -> None:
        super().__init__(agent_id)
        self.stats = stats if stats is not None else VoiceStats()
        self.speak_timeout_s = speak_timeout_s
        self.voice_topic = voice_topic
        if query_topic != QUERY_TOPIC:  # per instance: the wake stage's topic is a setting
            self.topics = (  # type: ignore[misc]
                Topic(query_topic, event_types=[USER_QUERY, AUDIO_END]),
                Topic(TIMERS_TOPIC, event_types=[TIMER_DONE]),
            )

    async def on_event(self, ctx: Context, event: Event) -> None:
        if event.type == AUDIO_END:
            ended = Event(AUDIO_END, source=self.agent_id, metadata={STREAM_KEY: stream_of(event)})
            await ctx.emit(self.voice_topic, ended)
        elif event.type == TIMER_DONE:
            label = event.payload.decode("utf-8", "replace").strip()
            await self._speak(ctx, f"Time's up{f': {label}' if label else ''}.")
        else:
            await self._turn(ctx, event)

    async def _turn(self, ctx: Context, query: Event) -> None:
        text = (event_text(query) or "").strip()
        if not text:
            return
        received = trio.current_time()
        answer = await ctx.answer(query)
        routed = trio.current_time()
        tool_results = []
        for action in answer.output.get("actions") or []:
            if isinstance(action, dict) and isinstance(action.get("capability"), str):
                result = await ctx.invoke(action["capability"], action.get("args") or {})
                outcome = {"capability": action["capability"], "status": result.status.name}
                if result.error is not None:
                    outcome["error"] = result.code
                tool_results.append(outcome)
        tools_done = trio.current_time()
        spoken = await self._speak(ctx, answer.text)
        finished = trio.current_time()

        latencies = {
            "route": (routed - received) * 1000,
            "tools": (tools_done - routed) * 1000,
            "turn": (finished - received) * 1000,
        }
        decode_ms = _float(query.metadata.get("decode_ms"))
        if decode_ms is not None:
            latencies["stt"] = decode_ms
        if isinstance(spoken.get("synthesis_ms"), int | float):
            latencies["tts"] = float(spoken["synthesis_ms"])
        eou_at = _float(query.metadata.get("eou_at"))
        first_audio_at = spoken.get("first_audio_at")
        if eou_at is not None and isinstance(first_audio_at, int | float):
            latencies["first_audio"] = (float(first_audio_at) - eou_at) * 1000
        for stage, ms in latencies.items():
            self.stats.record(stage, ms)
        self.stats.turns += 1
        interrupted = spoken.get("interrupted") is True
        self.stats.interrupted += interrupted

        stream = stream_of(query)
        timings = {f"{stage}_ms": f"{ms:.1f}" for stage, ms in latencies.items()}
        turn = {
            "transcript": text,
            "route": answer.route.value,
            "reason": answer.decision.reason,
            "intent": str(answer.output.get("intent") or ""),
            "answer": answer.text,
            "actions": json.dumps(tool_results),
            "wav_path": str(spoken.get("wav_path") or ""),
            "interrupted": str(interrupted).lower(),
            "session_id": query.metadata.get("session_id", ""),
            STREAM_KEY: stream,
            **timings,
        }
        await ctx.emit(
            self.voice_topic,
            Event(VOICE_TURN, answer.text.encode(), source=self.agent_id, metadata=turn),
        )
        latency = {STREAM_KEY: stream, "session_id": turn["session_id"], **timings}
        await ctx.emit(
            self.voice_topic, Event(VOICE_LATENCY, source=self.agent_id, metadata=latency)
        )

    async def _speak(self, ctx: Context, text: str) -> dict[str, Any]:
        """Speak ``text``; the provider's output (empty when it failed, which is counted)."""
        if not text.strip():
            return {}
        result = await ctx.invoke("tts.speak", {"text": text}, timeout_s=self.speak_timeout_s)
        output = result.json() if result.ok else None
        if not isinstance(output, dict):
            self.stats.failed += 1
            ctx.log.warning("speaking failed", code=result.code, error=result.error)
            return {}
        return output


class BargeIn(Agent):
    """Cuts the agent's speech short when a person starts talking (``mode='speech'``: any
    ``vad.speech_start``) or says the wake word (``'wake'``, for a loudspeaker the microphone
    hears: the agent's own voice cannot barge in on itself then) or never (``'off'``)."""

    topics = (
        Topic(VAD_TOPIC, event_types=[SPEECH_START]),
        Topic(WAKE_TOPIC, event_types=[WAKE_DETECTED]),
    )

    def __init__(
        self,
        agent_id: str = "voice.barge_in",
        *,
        output: Interruptible,
        mode: BargeInMode = "speech",
        stats: VoiceStats | None = None,
        vad_topic: str = VAD_TOPIC,
        wake_topic: str = WAKE_TOPIC,
        voice_topic: str = VOICE_TOPIC,
    ) -> None:
        super().__init__(agent_id)
        self.output = output
        self.mode = mode
        self.stats = stats if stats is not None else VoiceStats()
        self.voice_topic = voice_topic
        if (vad_topic, wake_topic) != (VAD_TOPIC, WAKE_TOPIC):  # per instance, from settings
            self.topics = (  # type: ignore[misc]
                Topic(vad_topic, event_types=[SPEECH_START]),
                Topic(wake_topic, event_types=[WAKE_DETECTED]),
            )

    async def on_event(self, ctx: Context, event: Event) -> None:
        cause = SPEECH_START if self.mode == "speech" else WAKE_DETECTED
        if self.mode == "off" or event.type != cause:
            return
        cut = self.output.interrupt(reason=f"barge-in: {event.type} on {stream_of(event)}")
        if cut:
            self.stats.barge_ins += 1
            metadata = {STREAM_KEY: stream_of(event), "cut": str(cut), "cause": event.type}
            await ctx.emit(
                self.voice_topic, Event(BARGE_IN, source=self.agent_id, metadata=metadata)
            )
