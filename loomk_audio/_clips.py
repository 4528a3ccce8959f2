"""Spoken commands for the voice benchmark, made on the spot with flite (Debian).

flite's ``slt`` voice is what pocketsphinx understands best, so the benchmark measures the
pipeline doing real work: the wake word fires, the words are recognised, the answer spoken.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from loomk_audio._deps import require_program
from loomk_audio.pcm import read_wav, write_wav

__all__ = ["COMMANDS", "make_clips"]

COMMANDS = (
    "hey jarvis, what time is it",
    "hey jarvis, what is twelve times seven",
    "hey jarvis, turn on the kitchen lights",
    "hey jarvis, set a timer for five minutes",
)
LEAD_S, TAIL_S = 0.5, 1.2


def make_clips(folder: Path, texts: tuple[str, ...] = COMMANDS) -> list[Path]:
    """One WAV per text in ``folder``: silence, the words (16 kHz, flite slt), silence."""
    import numpy as np

    flite = require_program("flite", apt="flite", purpose="the voice benchmark's speech")
    paths = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, text in enumerate(texts):
            raw = Path(scratch) / "speech.wav"
            subprocess.run([flite, "-voice", "slt", "-t", text, "-o", str(raw)], check=True)
            samples, rate, _channels = read_wav(raw)
            lead = np.zeros(int(rate * LEAD_S), dtype=np.int16)
            tail = np.zeros(int(rate * TAIL_S), dtype=np.int16)
            target = folder / f"command-{number}.wav"
            write_wav(target, np.concatenate((lead, samples, tail)), rate)
            paths.append(target)
    return paths
