"""``loomk bench voice``: what each stage of the voice pipeline costs, and how fast it answers.

Spoken commands are made with flite ("hey jarvis, what time is it", ...), then:

* **Stage costs** on the same audio: the VAD, the wake word detector and speech recognition
  (open n-gram; open n-gram with command rescoring, the pipeline's default; command
  grammar) as CPU time per second of audio (% of one core, per
  stream) and real-time factors, each beside the bare library doing the same work in the
  same run (webrtcvad's ``is_speech``, openWakeWord's ``predict``, pocketsphinx's
  whole-utterance decode): the physical baseline.
* **One stream in real time**: each command paced as a microphone delivers it, through the
  whole pipeline on a kernel; the latency from the end of the utterance (the VAD's end of
  speech) to the first audio of the spoken answer, and of each stage.
* **Concurrent streams in real time**: ``--streams`` commands at once; how far behind real
  time each stream finishes, and the process's CPU per stream.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loomk.bench.options import BenchOption, Scenario, count
from loomk_audio.stats import StageLatency, spread

__all__ = ["SCENARIO", "VoiceReport", "format_report", "run_voice_bench"]

SCENARIO = Scenario(
    "voice",
    "voice pipeline: stage costs, end of speech -> first audio, concurrent streams",
    "Makes spoken commands with flite, measures the VAD, wake word and speech recognition "
    "per second of audio beside the bare libraries, runs the commands through the whole "
    "pipeline in real time (end of utterance -> first audio of the answer), then several "
    "streams at once. Needs loomk[audio] and Debian's flite and espeak-ng.",
    (
        BenchOption("--streams", "streams", count, 4, 2, "concurrent real-time streams"),
        BenchOption("--repeats", "repeats", count, 2, 1, "rounds of the real-time commands"),
    ),
)
CHUNK_MS = 20


@dataclass(frozen=True, slots=True)
class StageCost:
    """CPU of one stage per second of audio, beside the bare library (both in ms/s)."""

    stage: str
    audio_s: float
    cpu_ms_per_s: float
    bare_cpu_ms_per_s: float

    @property
    def core_percent(self) -> float:
        """Per stream, as a share of one core."""
        return self.cpu_ms_per_s / 10


@dataclass(frozen=True, slots=True)
class Concurrent:
    """Several streams at once in real time."""

    turns: int
    lag_s: list[float]  # per stream: finished this long after its audio ended
    cpu_per_stream: float  # the machine's CPU while they ran, per stream, in cores


@dataclass(frozen=True, slots=True)
class VoiceReport:
    """Everything ``loomk bench voice`` measured."""

    stages: list[StageCost]
    latency: dict[str, StageLatency]  # per stage, single stream in real time
    turns: int
    expected_turns: int
    streams: int
    in_threads: Concurrent  # decoding in this process (one core: pocketsphinx holds the GIL)
    in_processes: Concurrent  # decoding in worker processes
    heard: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stages": [asdict(s) | {"core_percent": s.core_percent} for s in self.stages],
            "latency": {k: asdict(v) for k, v in self.latency.items()},
            "turns": self.turns,
            "expected_turns": self.expected_turns,
            "streams": self.streams,
            "in_threads": asdict(self.in_threads),
            "in_processes": asdict(self.in_processes),
            "heard": self.heard,
        }


def run_voice_bench(
    *, streams: int = 4, repeats: int = 2, progress: Callable[[str], None] = print
) -> VoiceReport:
    """Measure the pipeline (see the module notes)."""
    import trio

    from loomk_audio._clips import COMMANDS, make_clips
    from loomk_audio.pcm import read_wav

    with tempfile.TemporaryDirectory(prefix="loomk-bench-voice-") as scratch:
        folder = Path(scratch)
        progress("making spoken commands with flite")
        texts = tuple(COMMANDS[i % len(COMMANDS)] for i in range(max(streams, len(COMMANDS))))
        clips = make_clips(folder, texts)
        audio = [read_wav(path)[0] for path in clips[: len(COMMANDS)]]
        progress("stage costs: VAD, wake word, speech recognition")
        stages = _stage_costs(audio)
        progress(f"one stream in real time: {len(COMMANDS)} commands x {repeats}")
        single = trio.run(_single_stream, clips[: len(COMMANDS)], repeats, folder)
        progress(f"{streams} streams at once, in real time, decoding in this process")
        threads = trio.run(_concurrent, clips[:streams], folder, False)
        progress(f"{streams} streams at once, in real time, decoding in worker processes")
        processes = trio.run(_concurrent, clips[:streams], folder, True)
    turns, latency, heard = single
    return VoiceReport(
        stages,
        latency,
        turns,
        len(COMMANDS) * repeats,
        streams,
        Concurrent(*threads),
        Concurrent(*processes),
        heard,
    )


# ---- stage costs --------------------------------------------------------------------------


def _cpu_ms_per_s(work: Callable[[], object], audio_s: float) -> float:
    start = time.thread_time()
    work()
    return (time.thread_time() - start) * 1000 / audio_s


def _stage_costs(clips: list[Any]) -> list[StageCost]:
    import numpy as np

    from loomk_audio._oww import load_model
    from loomk_audio.stt import SttSettings, open_recognizer
    from loomk_audio.vad import VoiceActivity
    from loomk_audio.wake import WakeWordDetector, resolve_models

    stream = np.concatenate(clips)
    audio_s = len(stream) / 16_000
    chunk = 16 * CHUNK_MS
    pieces = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    costs = []

    activity = VoiceActivity()
    vad = _cpu_ms_per_s(lambda: [activity.feed(p) for p in pieces], audio_s)
    import webrtcvad

    bare_vad = webrtcvad.Vad(2)
    frames = [p.tobytes() for p in pieces if len(p) == chunk]
    bare = _cpu_ms_per_s(lambda: [bare_vad.is_speech(f, 16_000) for f in frames], audio_s)
    costs.append(StageCost("vad (webrtc)", audio_s, vad, bare))

    detector = WakeWordDetector("hey_jarvis")
    wake = _cpu_ms_per_s(lambda: [detector.feed(p) for p in pieces], audio_s)
    model = load_model(resolve_models("hey_jarvis"))
    frames80 = [stream[i : i + 1280] for i in range(0, len(stream) - 1279, 1280)]
    bare = _cpu_ms_per_s(lambda: [model.predict(f) for f in frames80], audio_s)
    costs.append(StageCost("wake word (openWakeWord)", audio_s, wake, bare))

    from loomk_audio.grammar import command_grammar

    commands = command_grammar()
    for label, settings in (
        ("speech to text (n-gram)", SttSettings()),
        ("speech to text (n-gram + rescoring)", SttSettings(rescore_grammar=commands)),
        ("speech to text (grammar)", SttSettings(grammar=commands)),
    ):
        streamed = _decode(open_recognizer(settings), clips, chunk)
        whole = _decode(open_recognizer(settings), clips, None)
        costs.append(
            StageCost(
                label, audio_s, _cpu_ms_per_s(streamed, audio_s), _cpu_ms_per_s(whole, audio_s)
            )
        )
    return costs


def _decode(recognizer: Any, clips: list[Any], chunk: int | None) -> Callable[[], None]:
    """Decoding every clip: in pieces of ``chunk`` samples as they would arrive, or whole."""

    def decode() -> None:
        for clip in clips:
            recognizer.start()
            step = chunk or len(clip)
            for i in range(0, len(clip), step):
                recognizer.feed(clip[i : i + step])
            recognizer.finish()

    return decode


# ---- the pipeline in real time ------------------------------------------------------------


def _settings(folder: Path, *, in_processes: bool = False, streams: int = 1) -> Any:
    from loomk_audio.pipeline import VoiceSettings
    from loomk_audio.stt import SttSettings
    from loomk_audio.tts import TtsSettings

    # written at once: a paced answer would hold the next command back by its playback
    tts = TtsSettings(out_dir=folder / "answers", realtime=False)
    stt = SttSettings(decode_in_processes=in_processes, recognizers=streams)
    return VoiceSettings(tts=tts, stt=stt)


async def _single_stream(
    clips: list[Path], repeats: int, folder: Path
) -> tuple[int, dict[str, StageLatency], list[str]]:
    from loomk.kernel import open_kernel
    from loomk_audio.pipeline import open_voice_pipeline

    samples: dict[str, list[float]] = {}
    heard: list[str] = []
    turns = 0
    async with (
        open_kernel(env={}, log_level="error", state_temporary=True) as kernel,
        open_voice_pipeline(kernel, _settings(folder)) as pipeline,
    ):
        await pipeline.listen(clips[0])  # warm up: models load on a stream's first audio
        for _ in range(repeats):
            for clip in clips:
                for turn in await pipeline.listen(clip, realtime=True):
                    turns += 1
                    heard.append(turn.metadata.get("transcript", ""))
                    for key, value in turn.metadata.items():
                        if key.endswith("_ms"):
                            samples.setdefault(key[:-3], []).append(float(value))
    return turns, {stage: spread(values) for stage, values in samples.items()}, heard


async def _concurrent(
    clips: list[Path], folder: Path, in_processes: bool
) -> tuple[int, list[float], float]:
    import trio

    from loomk.kernel import open_kernel
    from loomk_audio.pcm import read_wav
    from loomk_audio.pipeline import open_voice_pipeline

    durations = []
    for clip in clips:
        samples, rate, channels = read_wav(clip)
        durations.append(len(samples) / channels / rate)
    lags: list[float] = [0.0] * len(clips)
    turns = [0]
    async with (
        open_kernel(env={}, log_level="error", state_temporary=True) as kernel,
        open_voice_pipeline(
            kernel, _settings(folder, in_processes=in_processes, streams=len(clips))
        ) as pipeline,
    ):
        async with trio.open_nursery() as warming:  # every stream's models, side by side
            for clip in clips:
                warming.start_soon(pipeline.listen, clip)

        async def one(index: int, clip: Path) -> None:
            started = trio.current_time()
            answered = await pipeline.listen(clip, realtime=True)
            turns[0] += len(answered)
            lags[index] = trio.current_time() - started - durations[index]

        busy, total = _machine_cpu()
        async with trio.open_nursery() as nursery:
            for index, clip in enumerate(clips):
                nursery.start_soon(one, index, clip)
        busy_after, total_after = _machine_cpu()
        cores = os.cpu_count() or 1
        cpu_share = cores * (busy_after - busy) / max(total_after - total, 1)
    return turns[0], lags, cpu_share / len(clips)


def _machine_cpu() -> tuple[int, int]:
    """(busy, all) CPU time of the whole machine so far, in clock ticks (``/proc/stat``):
    worker processes count too, which this process's own CPU time would miss."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def format_report(report: VoiceReport) -> str:
    """The report as plain-text tables."""
    lines = [
        "stage cost per stream (CPU ms per second of audio; bare = the library alone)",
        f"{'stage':>36}  {'loomk':>8}  {'bare':>8}  {'% of a core':>11}",
    ]
    for stage in report.stages:
        lines.append(
            f"{stage.stage:>36}  {stage.cpu_ms_per_s:>8.1f}  {stage.bare_cpu_ms_per_s:>8.1f}  "
            f"{stage.core_percent:>10.2f}%"
        )
    lines.append("")
    lines.append(
        f"one stream in real time: {report.turns}/{report.expected_turns} commands answered"
    )
    lines.append(f"{'latency':>28}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}")
    for name, latency in sorted(report.latency.items()):
        lines.append(
            f"{name:>28}  {latency.p50_ms:>8.0f}  {latency.p95_ms:>8.0f}  {latency.max_ms:>8.0f}"
        )
    lines.append("")
    lines.append(
        f"{report.streams} streams at once in real time (lag: how long after its audio ended "
        "each stream was fully answered)"
    )
    for label, run in (
        ("decoding in-process", report.in_threads),
        ("decoding in workers", report.in_processes),
    ):
        lags = ", ".join(f"{lag:.2f}" for lag in run.lag_s)
        lines.append(
            f"{label:>28}: {run.turns}/{report.streams} answered, lag [{lags}] s, "
            f"CPU {100 * run.cpu_per_stream:.1f}% of a core per stream"
        )
    return "\n".join(lines)
