"""``loomk voice``: the offline voice agent on WAV files or a microphone.

``loomk voice --wav FILE... [--out DIR]`` plays each file into the pipeline and prints, per
utterance, what was heard, where the router sent it, the answer, and the WAV of the spoken
answer. ``loomk voice --mic`` listens until Ctrl+C. Everything runs offline: pocketsphinx
hears, openWakeWord wakes, the local model answers unless an OpenAI-compatible endpoint is
configured (``LOOMK_LLM_BASE_URL``), espeak-ng speaks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import trio

import loomk
from loomk import Event, QoS
from loomk_audio._mic import choose_device
from loomk_audio.assistant import VOICE_TURN, BargeInMode
from loomk_audio.errors import AudioError
from loomk_audio.events import VOICE_TOPIC, stream_of
from loomk_audio.pipeline import VoiceSettings, open_voice_pipeline
from loomk_audio.sources import MicSource, WavSource, list_input_devices
from loomk_audio.wake import resolve_models

__all__ = ["COMMAND", "VoiceCommand", "describe_turn"]

DEFAULT_OUT = "voice-answers"
_LATENCY_LABELS = (
    ("stt_ms", "speech to text"),
    ("route_ms", "routing and answer"),
    ("tools_ms", "tools"),
    ("tts_ms", "synthesis"),
    ("first_audio_ms", "end of speech to first audio"),
)


def describe_turn(turn: Event) -> str:
    """One turn in a few lines: heard, routing, answer, spoken WAV, latencies."""
    meta = turn.metadata
    lines = [
        f"  heard:   {meta.get('transcript', '')}",
        f"  routing: {meta.get('route', '?')} ({meta.get('reason', '')})",
        f"  answer:  {meta.get('answer', '')}",
    ]
    if meta.get("interrupted") == "true":
        lines[-1] += "  [cut short: barge-in]"
    if meta.get("wav_path"):
        lines.append(f"  spoken:  {meta['wav_path']}")
    timings = [
        f"{label} {float(meta[key]):.0f} ms" for key, label in _LATENCY_LABELS if key in meta
    ]
    if timings:
        lines.append(f"  latency: {', '.join(timings)}")
    return "\n".join(lines)


class VoiceCommand:
    """The ``voice`` subcommand of ``loomk``."""

    name = "voice"
    help = "run the offline voice agent on WAV files (--wav) or a microphone (--mic)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.description = (
            "Run the offline voice agent: wake word ('hey jarvis'), speech to text, the "
            "model router, tools and a spoken answer. With --wav each file is played in as "
            "fast as the agent takes it (--realtime: at its real pace); every utterance prints "
            "its transcript, the routing decision and the answer, and the spoken answer is "
            "written as a WAV file (played instead when there is a sound output device)."
        )
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--wav", nargs="+", metavar="FILE", type=Path, help="WAV files")
        source.add_argument("--mic", action="store_true", help="listen to a microphone")
        parser.add_argument(
            "--out",
            metavar="DIR",
            type=Path,
            default=Path(DEFAULT_OUT),
            help="where the spoken answers are written when there is no sound output device "
            f"(default: ./{DEFAULT_OUT})",
        )
        parser.add_argument(
            "--device", metavar="NAME", help="microphone: part of the device's name"
        )
        parser.add_argument(
            "--realtime",
            action="store_true",
            help="play WAV files at their real pace (default: as fast as the agent hears)",
        )
        parser.add_argument(
            "--wake-word",
            metavar="MODEL",
            default="hey_jarvis",
            help="openWakeWord model: hey_jarvis (default), alexa, hey_mycroft, "
            "hey_rhasspy, okay_nabu, or a .tflite path",
        )
        parser.add_argument(
            "--grammar",
            action="store_true",
            help="recognise only the commands the local model knows (faster, stricter)",
        )
        parser.add_argument(
            "--barge-in",
            choices=("speech", "wake", "off"),
            default=None,
            help="what cuts an answer short: any speech (default with --wav), the wake "
            "word (default with --mic, so the agent's own voice does not), or nothing",
        )

    def run(self, args: argparse.Namespace) -> int:
        try:
            settings = _settings(VoiceSettings(), args)
        except (AudioError, loomk.ConfigError) as error:
            print(f"loomk voice: {error}", file=sys.stderr)
            return 2
        try:
            resolve_models(args.wake_word)  # an unknown wake word fails now, naming the known
            if args.wav:
                for path in args.wav:
                    WavSource(path)  # unreadable files fail now, before anything starts
            else:
                choose_device(list_input_devices(), args.device)
        except FileNotFoundError as error:
            print(f"loomk voice: no such file: {error.filename}", file=sys.stderr)
            return 2
        except (AudioError, OSError) as error:
            print(f"loomk voice: {error}", file=sys.stderr)
            return 2
        try:
            loomk.run(_main(settings, args))
        except (AudioError, loomk.LoomkError) as error:
            print(f"loomk voice: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        return 0


def _settings(base: VoiceSettings, args: argparse.Namespace) -> VoiceSettings:
    barge_in: BargeInMode = args.barge_in or ("wake" if args.mic else "speech")
    stt = base.stt
    if args.grammar:
        from loomk_audio.grammar import command_grammar

        stt = replace(stt, grammar=command_grammar())
    return replace(
        base,
        wake=replace(base.wake, models=(args.wake_word,)),
        stt=stt,
        tts=replace(base.tts, out_dir=args.out),
        barge_in=barge_in,
    )


def _main(
    settings: VoiceSettings, args: argparse.Namespace
) -> Callable[[loomk.Kernel], Awaitable[None]]:
    async def main(kernel: loomk.Kernel) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        async with open_voice_pipeline(kernel, settings) as pipeline:
            if args.wav:
                for path in args.wav:
                    print(f"{path}", flush=True)
                    turns = await pipeline.listen(path, realtime=args.realtime)
                    for turn in turns:
                        print(describe_turn(turn), flush=True)
                    if not turns:
                        print("  (no wake word heard: nothing to answer)", flush=True)
                return
            await _listen_to_mic(kernel, args)

    return main


async def _listen_to_mic(kernel: loomk.Kernel, args: argparse.Namespace) -> None:
    source = MicSource(device=args.device)
    print(f"listening on {source.describe()}; say 'hey jarvis, ...' (Ctrl+C to stop)", flush=True)
    async with (
        kernel.bus.subscribe(VOICE_TOPIC, qos=QoS.BATCHED, event_types=[VOICE_TURN]) as turns,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(source.run, kernel.bus)
        async for _topic, turn in turns:
            print(f"[{stream_of(turn)}]\n{describe_turn(turn)}", flush=True)


COMMAND = VoiceCommand()
