"""The chunks of a RIFF/WAVE file: its format and its sample bytes.

Python's ``wave`` module reads only integer PCM in the plain format; recorders and editors
also write 32-bit float samples and the ``WAVE_FORMAT_EXTENSIBLE`` header (24-bit and
multi-channel files, most often). This reads all three, and a data chunk whose length is
wrong or unknown (a WAV streamed to a pipe, as ``espeak-ng --stdout`` writes it) up to the
end of the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["FLOAT", "PCM", "WaveData", "WaveError", "parse_wave"]

PCM = 1
FLOAT = 3
_EXTENSIBLE = 0xFFFE


class WaveError(ValueError):
    """Not a WAV file this reader understands; the message says why."""


@dataclass(frozen=True, slots=True)
class WaveData:
    """A WAV file's format (``encoding`` :data:`PCM` or :data:`FLOAT`) and sample bytes."""

    encoding: int
    channels: int
    sample_rate: int
    bits: int
    data: bytes


def parse_wave(content: bytes) -> WaveData:
    """The format and samples of the WAV file ``content``; :class:`WaveError` otherwise."""
    if len(content) < 12 or content[:4] != b"RIFF" or content[8:12] != b"WAVE":
        raise WaveError("file does not start with a RIFF/WAVE header")
    at = 12
    found: tuple[int, int, int, int] | None = None
    while at + 8 <= len(content):
        chunk, size = content[at : at + 4], struct.unpack("<I", content[at + 4 : at + 8])[0]
        body = at + 8
        if chunk == b"fmt ":
            found = _format(content[body : body + size])
        elif chunk == b"data":
            if found is None:
                raise WaveError("the data chunk comes before the fmt chunk")
            end = len(content) if size in (0, 0xFFFFFFFF) else min(body + size, len(content))
            encoding, channels, rate, bits = found
            return WaveData(encoding, channels, rate, bits, content[body:end])
        at = body + size + (size & 1)  # chunks are padded to an even length
    raise WaveError("no data chunk" if found is not None else "no fmt chunk")


def _format(fmt: bytes) -> tuple[int, int, int, int]:
    if len(fmt) < 16:
        raise WaveError(f"fmt chunk of {len(fmt)} bytes (16 at least)")
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE:
        if len(fmt) < 26:
            raise WaveError("extensible fmt chunk without its sub-format")
        tag = struct.unpack("<H", fmt[24:26])[0]
    if tag not in (PCM, FLOAT):
        raise WaveError(f"sample encoding {tag:#x} (integer PCM and 32/64-bit float are read)")
    return tag, channels, rate, bits
