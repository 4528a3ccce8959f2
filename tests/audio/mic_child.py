"""Runs MicSource in a process of its own and prints what happened as JSON (test_mic.py).

PortAudio reads the ALSA configuration when it is initialised, from ``ALSA_CONFIG_PATH``, so
a test that gives it a fake microphone (an ALSA ``file`` PCM playing a raw file) or no device
at all must set that variable before PortAudio loads: in a child process.

Usage: ``python mic_child.py capture OUT_DIR FRAMES`` (a fake device named ``filemic`` is
configured) or ``python mic_child.py no-device``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trio

from loomk import EventBus
from loomk.testing import capture_events
from loomk_audio.errors import AudioDeviceError
from loomk_audio.events import AUDIO_TOPIC
from loomk_audio.sources import MicSource, list_input_devices


async def capture(out_dir: Path, frames: int) -> dict[str, Any]:
    """Record ``frames`` frames from the fake device; then a device name that matches
    nothing; then a source cancelled while it records."""
    report: dict[str, Any] = {"devices": [d.name for d in list_input_devices()]}
    bus = EventBus()
    source = MicSource(device="FileMic")  # a case-insensitive part of the name
    with capture_events(bus, AUDIO_TOPIC) as recorded:
        stats = await source.run(bus, max_frames=frames)
    events = recorded.events
    (out_dir / "captured.raw").write_bytes(b"".join(e.payload for e in events))
    report["capture"] = {
        "stats": [stats.chunks, stats.frames, stats.sample_rate, stats.channels],
        "types": [e.type for e in events],
        "metadata": [dict(e.metadata) for e in events],
        "priorities": sorted({e.priority for e in events}),
        "sources": sorted({e.source for e in events}),
        "open_after": source.is_open,
        "described": source.describe(),
    }

    try:
        await MicSource(device="usb headset").run(bus)
    except AudioDeviceError as error:
        report["no_match"] = str(error)

    cancelled = MicSource(device="filemic", stream="mic.cancelled")
    with capture_events(bus, AUDIO_TOPIC) as recorded:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled.run, bus)
            await recorded.wait_for(5)
            was_open = cancelled.is_open
            nursery.cancel_scope.cancel()
    report["cancel"] = {
        "open_while_running": was_open,
        "open_after": cancelled.is_open,
        "types": [e.type for e in recorded.events],
        "streams": sorted({e.metadata["stream"] for e in recorded.events}),
    }
    return report


async def no_device() -> dict[str, Any]:
    """What a machine without an input device gives."""
    report: dict[str, Any] = {"devices": [d.name for d in list_input_devices()]}
    bus = EventBus()
    with capture_events(bus, AUDIO_TOPIC) as recorded:
        try:
            await MicSource().run(bus)
        except AudioDeviceError as error:
            report["error"] = str(error)
            report["code"] = error.code
            report["is_os_error"] = isinstance(error, OSError)
    report["published"] = len(recorded)
    return report


def main() -> None:
    if sys.argv[1] == "capture":
        report = trio.run(capture, Path(sys.argv[2]), int(sys.argv[3]))
    else:
        report = trio.run(no_device)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
