"""Makes the WAV files the voice demo listens to (they are committed; this shows how).

Each clip is a person (flite's ``slt`` voice, 16 kHz mono) saying "hey jarvis, ..." between
short silences, as a microphone would hear it. Run ``python examples/audio/make_clips.py
[FOLDER]``; it needs Debian's ``flite`` (``sudo apt-get install flite``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

CLIPS = {
    "what_time.wav": "hey jarvis, what time is it",
    "twelve_times_seven.wav": "hey jarvis, what is twelve times seven",
    "kitchen_lights.wav": "hey jarvis, turn on the kitchen lights",
    "timer.wav": "hey jarvis, set a timer for five minutes",
    "no_wake_word.wav": "turn off the kitchen lights",
}
RATE = 16_000
LEAD_S, TAIL_S = 0.5, 1.2


def speak(text: str, folder: Path) -> bytes:
    """``text`` as 16 kHz mono 16-bit PCM, spoken by flite's slt voice."""
    path = folder / "speech.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
    with wave.open(str(path), "rb") as clip:
        assert clip.getframerate() == RATE
        assert clip.getnchannels() == 1
        return clip.readframes(clip.getnframes())


def main(folder: Path) -> None:
    if shutil.which("flite") is None:
        sys.exit("make_clips.py needs flite: sudo apt-get install flite")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name, text in CLIPS.items():
            pcm = speak(text, Path(scratch))
            lead, tail = bytes(int(RATE * LEAD_S) * 2), bytes(int(RATE * TAIL_S) * 2)
            with wave.open(str(folder / name), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(RATE)
                out.writeframes(lead + pcm + tail)
            print(f"{folder / name}: {text!r}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
