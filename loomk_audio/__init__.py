"""The audio edge of loomk: an offline voice agent as supervised agents on the bus.

Sources (a microphone through PyAudio, WAV files) publish ``audio_chunk`` events; the VAD
(WebRTC or Silero), the wake word (openWakeWord, or Loom's transcript phrases), speech
recognition (pocketsphinx, or Vosk with a Vosk model) and the assistant (the kernel's model
router, tools through the broker, ``tts.speak`` with espeak-ng) are agents that talk only
through the bus, with Loom's topics and event types. Start them all with
:func:`open_voice_pipeline`; ``loomk voice`` does it from the command line. Install with
``pip install 'loomk[audio]'`` (and Debian's espeak-ng; PyAudio builds against portaudio19-dev).
"""

from loomk_audio.assistant import BargeIn, VoiceAssistant
from loomk_audio.cli import describe_turn
from loomk_audio.errors import (
    AudioDependencyMissing,
    AudioDeviceError,
    AudioError,
    AudioFormatError,
    AudioModelNotFound,
)
from loomk_audio.home import Home
from loomk_audio.pipeline import VoicePipeline, VoiceSettings, open_voice_pipeline
from loomk_audio.sources import MicSource, WavSource, list_input_devices
from loomk_audio.stats import VoiceStats, VoiceStatsSnapshot
from loomk_audio.stt import SttAgent, SttSettings
from loomk_audio.tts import TtsProvider, TtsSettings
from loomk_audio.vad import VadAgent, VadSettings, VoiceActivity
from loomk_audio.wake import WakeAgent, WakeSettings, WakeWordDetector

__all__ = [
    "AudioDependencyMissing",
    "AudioDeviceError",
    "AudioError",
    "AudioFormatError",
    "AudioModelNotFound",
    "BargeIn",
    "Home",
    "MicSource",
    "SttAgent",
    "SttSettings",
    "TtsProvider",
    "TtsSettings",
    "VadAgent",
    "VadSettings",
    "VoiceActivity",
    "VoiceAssistant",
    "VoicePipeline",
    "VoiceSettings",
    "VoiceStats",
    "VoiceStatsSnapshot",
    "WakeAgent",
    "WakeSettings",
    "WakeWordDetector",
    "WavSource",
    "describe_turn",
    "list_input_devices",
    "open_voice_pipeline",
]
