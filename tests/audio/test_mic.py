"""MicSource against a fake microphone and against a machine with no input device.

The fake microphone is ALSA's ``file`` PCM reading a raw s16le file (no card, no root):
PortAudio lists it as a device and reads the file's samples back exactly. PortAudio reads the
ALSA configuration when it starts, so each case runs in a child process (mic_child.py) with
``ALSA_CONFIG_PATH`` set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from audio_support import Speech, pad, silence

from loomk_audio._mic import InputDevice, choose_device
from loomk_audio.errors import AudioDeviceError

CHILD = Path(__file__).with_name("mic_child.py")
ALSA_DEFAULTS = "/usr/share/alsa/alsa.conf"
CHILD_TIMEOUT_S = 60
Samples = npt.NDArray[np.int16]


def fake_mic_config(folder: Path, raw: Path) -> Path:
    """An ALSA configuration whose capture device ``filemic`` (also the default) plays
    ``raw``; playback goes nowhere."""
    config = folder / "test-asound.conf"
    config.write_text(
        'pcm.!default { type asym  playback.pcm "nullout"  capture.pcm "filemic" }\n'
        "pcm.nullout { type null }\n"
        f'pcm.filemic {{ type file  slave.pcm "null"  file "/dev/null"  infile "{raw}"  '
        'format "raw" }\n'
    )
    return config


def run_child(alsa_config_path: str, *args: str) -> tuple[dict[str, Any], str]:
    """Run mic_child.py with ALSA reading ``alsa_config_path``; its JSON report and stderr."""
    env = {**os.environ, "ALSA_CONFIG_PATH": alsa_config_path}
    done = subprocess.run(
        [sys.executable, str(CHILD), *args],
        env=env,
        capture_output=True,
        timeout=CHILD_TIMEOUT_S,  # a hang in PortAudio fails the test instead of the run
        check=False,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, stderr
    return json.loads(done.stdout), stderr


@dataclass(frozen=True)
class FakeMicRun:
    """What mic_child.py reported after recording ``samples`` from the fake microphone."""

    samples: Samples
    captured: Samples
    report: dict[str, Any]
    stderr: str


@pytest.fixture(scope="module")
def fake_mic_run(speech: Speech, tmp_path_factory: pytest.TempPathFactory) -> FakeMicRun:
    """One child process records a flite clip from the fake microphone, then tries a device
    name that matches nothing, then cancels a recording source."""
    folder = tmp_path_factory.mktemp("fake-mic")
    samples = pad(silence(0.2), speech.flite("turn on the kitchen lights"), silence(0.2))
    raw = folder / "mic.raw"
    raw.write_bytes(samples.astype("<i2").tobytes())
    config = fake_mic_config(folder, raw)
    report, stderr = run_child(
        f"{ALSA_DEFAULTS}:{config}", "capture", str(folder), str(len(samples))
    )
    captured = np.frombuffer((folder / "captured.raw").read_bytes(), dtype="<i2")
    return FakeMicRun(samples, captured.astype(np.int16), report, stderr)


def test_the_fake_microphone_gives_back_the_flite_clip_exactly(fake_mic_run: FakeMicRun) -> None:
    samples, report = fake_mic_run.samples, fake_mic_run.report
    assert "filemic" in report["devices"]
    assert np.array_equal(fake_mic_run.captured, samples)  # bit-exact, every sample
    capture = report["capture"]
    chunk_frames = 320  # 20 ms at 16 kHz
    chunks = -(-len(samples) // chunk_frames)
    assert capture["stats"] == [chunks, len(samples), 16_000, 1]
    assert capture["types"] == ["audio_chunk"] * chunks + ["audio_end"]
    metadata = capture["metadata"]
    first = metadata[0]
    assert {k: first[k] for k in ("sample_rate", "channels", "device", "encoding")} == {
        "sample_rate": "16000",
        "channels": "1",
        "device": "filemic",
        "encoding": "pcm_s16le",
    }
    assert first["frame_samples"] == str(chunk_frames)
    offsets = [int(m["offset_frames"]) for m in metadata[:-1]]
    assert offsets == list(range(0, len(samples), chunk_frames))
    assert {m["stream"] for m in metadata} == {"mic.primary"}  # audio_end says it too
    assert capture["priorities"] == [90]
    assert capture["sources"] == ["mic.primary"]
    assert capture["open_after"] is False  # closed when run returned
    assert "'filemic'" in capture["described"]


def test_alsa_and_jack_start_up_chatter_is_silenced(fake_mic_run: FakeMicRun) -> None:
    assert "ALSA lib" not in fake_mic_run.stderr
    assert "jack" not in fake_mic_run.stderr.lower()


def test_a_device_name_that_matches_nothing_lists_the_devices(fake_mic_run: FakeMicRun) -> None:
    message = fake_mic_run.report["no_match"]
    assert "no audio input device matches 'usb headset'" in message
    assert "'filemic'" in message


def test_a_cancelled_microphone_closes_its_stream_and_ends_its_stream(
    fake_mic_run: FakeMicRun,
) -> None:
    cancel = fake_mic_run.report["cancel"]
    assert cancel["open_while_running"] is True
    assert cancel["open_after"] is False
    assert cancel["types"][-1] == "audio_end"
    assert set(cancel["types"][:-1]) == {"audio_chunk"}
    assert cancel["streams"] == ["mic.cancelled"]


@pytest.mark.skipif(
    any(Path("/dev/snd").glob("controlC*")),
    reason="this machine has a sound card; the case is a machine without one",
)
def test_no_input_device_is_a_clear_error_not_a_hang_or_a_portaudio_traceback() -> None:
    # ALSA's own configuration only (PortAudio finds the cards itself; an empty ALSA
    # configuration is no substitute: PortAudio 19.6 aborts on an assertion with it).
    report, stderr = run_child(ALSA_DEFAULTS, "no-device")

    assert report["devices"] == []
    message = report["error"]
    assert message.startswith("no audio input device")
    assert "--device" in message
    assert "--wav" in message
    assert report["code"] == "AUDIO_DEVICE_ERROR"
    assert report["is_os_error"] is True
    assert report["published"] == 0
    assert "Traceback" not in stderr
    assert "ALSA lib" not in stderr


DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", 2, 44_100, "ALSA"),
    InputDevice(3, "USB Audio Device: USB Audio (hw:1,0)", 1, 48_000, "ALSA"),
    InputDevice(6, "sysdefault", 32, 44_100, "ALSA"),
    InputDevice(7, "default", 32, 44_100, "ALSA"),
    InputDevice(8, "pulse", 32, 44_100, "ALSA"),
]


@pytest.mark.parametrize(
    ("wanted", "index"),
    [
        ("usb", 3),  # a case-insensitive part of the name, as Loom's MIC_DEVICE
        ("ALC3246", 0),
        ("DEFAULT", 7),  # an exact name wins over names that contain it
        ("sysdef", 6),
        (None, 8),  # nothing asked: PortAudio's default input device
    ],
)
def test_a_device_is_chosen_by_part_of_its_name(wanted: str | None, index: int) -> None:
    assert choose_device(DEVICES, wanted, default_index=8).index == index


def test_without_a_default_the_first_input_device_is_used() -> None:
    assert choose_device(DEVICES, None, default_index=None).index == 0


def test_no_device_at_all_says_how_to_fix_it() -> None:
    with pytest.raises(AudioDeviceError, match=r"no audio input device.*--device.*--wav"):
        choose_device([], None)
