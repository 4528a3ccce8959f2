"""The voice agent, offline, from Python: WAV files in, spoken answers out.

Run it with ``python examples/voice_agent.py`` (``make demo`` runs the same pipeline through
``loomk voice --wav examples/audio/*.wav``). Each clip in
``examples/audio`` is played into the pipeline as its own stream (as fast as the agents
take it; ``pipeline.listen(clip, realtime=True)`` paces it as a microphone would): the wake word
("hey jarvis") opens a session, pocketsphinx writes down what follows, the router sends it
to the local model, its actions run through the broker (the kitchen lights, a timer), and
espeak-ng speaks the answer into a WAV file. The clip without the wake word gets no answer.
Needs ``loomk[audio]`` and Debian's espeak-ng (``make demo`` installs both).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import loomk
from loomk_audio import TtsSettings, VoiceSettings, describe_turn, open_voice_pipeline

AUDIO = Path(__file__).parent / "audio"


async def main(kernel: loomk.Kernel) -> None:
    answers = Path(tempfile.mkdtemp(prefix="loomk-voice-"))
    settings = VoiceSettings(tts=TtsSettings(out_dir=answers))
    async with open_voice_pipeline(kernel, settings) as pipeline:
        for clip in sorted(AUDIO.glob("*.wav")):
            print(clip.name)
            turns = await pipeline.listen(clip)
            for turn in turns:
                print(describe_turn(turn))
            if not turns:
                print("  (no wake word: the agent stayed quiet)")
        home = pipeline.home
        assert home is not None
        print(f"lights: {home.lights}")
        print(f"timers: {[f'{t.seconds} s' for t in home.timers.values()]}")
        print(f"turns: {pipeline.stats().turns}, spoken answers in {answers}")
    sys.stdout.flush()


if __name__ == "__main__":
    loomk.run(main)
