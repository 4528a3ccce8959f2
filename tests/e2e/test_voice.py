"""The voice agent as a user runs it: ``loomk voice``, the example, the shipped clips and
``loomk bench voice``, in subprocesses, on the audio in ``examples/audio``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "examples" / "audio"
LOOMK = [sys.executable, "-m", "loomk.cli"]
pytestmark = pytest.mark.e2e


def _run(*args: str | Path, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _blocks(stdout: str) -> dict[str, list[str]]:
    """The output per file: its name's line, then the lines indented under it."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("  "):
            current.append(line.strip())
        else:
            current = blocks.setdefault(Path(line).name, [])
    return blocks


def test_loomk_voice_answers_each_clip_aloud_and_ignores_the_one_without_wake_word(
    tmp_path: Path,
) -> None:
    clips = sorted(CLIPS.glob("*.wav"))
    result = _run(*LOOMK, "voice", "--wav", *clips, "--out", tmp_path / "answers", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    blocks = _blocks(result.stdout)
    assert set(blocks) == {clip.name for clip in clips}
    assert blocks["no_wake_word.wav"] == ["(no wake word heard: nothing to answer)"]
    expected = {
        "kitchen_lights.wav": ("turn on the kitchen lights", "Turning on the kitchen lights."),
        "timer.wav": ("set a timer for five minutes", "Timer set for 5 minutes."),
        "twelve_times_seven.wav": ("what is twelve times seven", "Twelve times seven is 84."),
        "what_time.wav": ("what time is it", "It's "),
    }
    for name, (heard, answer) in expected.items():
        lines = blocks[name]
        assert lines[0] == f"heard:   {heard}"
        assert lines[1].startswith("routing: Local (")
        assert lines[2].startswith(f"answer:  {answer}")
        spoken = Path(lines[3].removeprefix("spoken:  "))
        assert spoken.parent == tmp_path / "answers"
        with wave.open(str(spoken)) as wav:  # a real answer: a second or more of speech
            assert wav.getnframes() / wav.getframerate() > 0.8
        assert lines[4].startswith("latency: speech to text ")
        assert "end of speech to first audio" in lines[4]


def test_loomk_voice_refuses_what_it_cannot_hear_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "notes.wav").write_text("not audio")
    bad = _run(*LOOMK, "voice", "--wav", tmp_path / "notes.wav", cwd=tmp_path)
    assert bad.returncode == 2
    assert "not a PCM WAV file" in bad.stderr
    assert "notes.wav" in bad.stderr
    missing = _run(*LOOMK, "voice", "--wav", tmp_path / "gone.wav", cwd=tmp_path)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    for result in (bad, missing):
        assert "Traceback" not in result.stderr


def test_loomk_voice_mic_without_a_sound_card_says_what_to_do(tmp_path: Path) -> None:
    if Path("/dev/snd").exists():
        pytest.skip("this machine has sound devices; the no-device path is for machines without")
    result = _run(*LOOMK, "voice", "--mic", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "no audio input device" in result.stderr
    assert "--wav FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_voice_example_runs_offline_and_reports_what_the_agent_did(tmp_path: Path) -> None:
    result = _run(sys.executable, ROOT / "examples" / "voice_agent.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  answer:  Turning on the kitchen lights." in out
    assert "  answer:  Twelve times seven is 84." in out
    assert "  (no wake word: the agent stayed quiet)" in out
    assert "lights: {'kitchen': True}" in out
    assert "timers: ['300 s']" in out
    assert "turns: 4," in out


def test_the_shipped_clips_are_what_make_clips_makes(tmp_path: Path) -> None:
    result = _run(sys.executable, CLIPS / "make_clips.py", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    made = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert made == sorted(p.name for p in CLIPS.glob("*.wav"))
    for name in made:
        assert (tmp_path / name).read_bytes() == (CLIPS / name).read_bytes(), name


def test_bench_voice_prints_stage_costs_and_latencies_and_writes_json(tmp_path: Path) -> None:
    target = tmp_path / "voice.json"
    result = _run(
        *LOOMK, "bench", "voice", "--quick", "--streams", "2", "--json", target, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "wake word (openWakeWord)" in result.stdout
    assert "first_audio" in result.stdout
    figures = json.loads(target.read_text())
    stages = {stage["stage"]: stage for stage in figures["stages"]}
    assert set(stages) == {
        "vad (webrtc)",
        "wake word (openWakeWord)",
        "speech to text (n-gram)",
        "speech to text (n-gram + rescoring)",
        "speech to text (grammar)",
    }
    for stage in stages.values():
        assert stage["cpu_ms_per_s"] > 0
        assert stage["bare_cpu_ms_per_s"] > 0
    assert figures["turns"] == figures["expected_turns"] == 4
    assert figures["latency"]["first_audio"]["count"] == 4
    assert figures["streams"] == 2
    for way in ("in_threads", "in_processes"):
        assert figures[way]["turns"] == 2
        assert len(figures[way]["lag_s"]) == 2


def test_the_readme_s_voice_commands_run_as_written() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```sh\n", readme.index("## Voice agent")) + len("```sh\n")
    commands = [line.split("#")[0].strip() for line in readme[start:].split("```")[0].splitlines()]
    assert commands[0].startswith("loomk voice --wav examples/audio/*.wav")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr, command
        assert result.stdout.strip(), command
