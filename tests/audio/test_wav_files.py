"""WAV files as recorders and tools write them: integer PCM of every width, 32/64-bit float,
the extensible header, a length left unknown by a stream, and files that are not WAV."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from audio_support import Speech

from loomk_audio.errors import AudioFormatError
from loomk_audio.pcm import read_wav
from loomk_audio.sources import WavSource

SENTENCE = "turn on the kitchen lights"


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, speech: Speech) -> Path:
    return speech.save("original.wav", speech.flite(SENTENCE))


def sox(source: Path, target: Path, *options: str) -> Path:
    # -D: no dither, so a narrower file differs from the original by rounding alone
    subprocess.run(["sox", "-D", str(source), *options, str(target)], check=True)
    return target


@pytest.mark.parametrize(
    ("options", "tag"),
    [
        (("-b", "8", "-e", "unsigned-integer"), 1),
        (("-b", "24"), 0xFFFE),  # sox writes the extensible header above 16 bits
        (("-b", "32", "-e", "signed-integer"), 0xFFFE),
        (("-b", "32", "-e", "floating-point"), 3),
        (("-b", "64", "-e", "floating-point"), 3),
    ],
    ids=["8-bit", "24-bit extensible", "32-bit", "float32", "float64"],
)
def test_every_common_encoding_reads_as_the_same_sound(
    original: Path, tmp_path: Path, options: tuple[str, ...], tag: int
) -> None:
    converted = sox(original, tmp_path / "converted.wav", *options)
    assert int.from_bytes(converted.read_bytes()[20:22], "little") == tag  # the header sox wrote
    expected, rate, channels = read_wav(original)
    samples, got_rate, got_channels = read_wav(converted)
    assert (got_rate, got_channels) == (rate, channels)
    assert len(samples) == len(expected)
    tolerance = 256 if options[1] == "8" else 2  # 8 bits keep only the high byte
    assert np.abs(samples.astype(int) - expected.astype(int)).max() <= tolerance


def test_a_stereo_float_file_plays_as_its_own_format(original: Path, tmp_path: Path) -> None:
    stereo = sox(
        original,
        tmp_path / "stereo.wav",
        "-b",
        "32",
        "-e",
        "floating-point",
        "-r",
        "48000",
        "-c",
        "2",
    )
    source = WavSource(stereo)
    assert (source.sample_rate, source.channels) == (48_000, 2)


def test_a_wav_streamed_with_an_unknown_length_is_read_to_its_end(tmp_path: Path) -> None:
    streamed = subprocess.run(
        ["espeak-ng", "--stdout", SENTENCE], check=True, capture_output=True
    ).stdout
    assert int.from_bytes(streamed[40:44], "little") > len(streamed)  # the length is bogus
    samples, rate, channels = read_wav(streamed)
    assert (rate, channels) == (22_050, 1)
    assert len(samples) == (len(streamed) - 44) // 2


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"RIFF",
        b"not audio at all",
        b"RIFF\x04\x00\x00\x00WAVE",
        b"RIFF\x00\x00\x00\x00WAVEdata",
    ],
)
def test_what_is_not_a_wav_file_is_a_clear_error(content: bytes) -> None:
    with pytest.raises(AudioFormatError, match="not a PCM WAV file"):
        read_wav(content)
