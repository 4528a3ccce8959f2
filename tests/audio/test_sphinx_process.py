"""pocketsphinx in worker processes: the same words as in this process, on other cores, and
a clear error when a worker dies."""

from __future__ import annotations

import os
import signal

import pytest
from audio_support import Speech, pad, silence

from loomk_audio._sphinx import SphinxRecognizer
from loomk_audio._sphinx_process import ProcessRecognizer
from loomk_audio.errors import AudioError
from loomk_audio.stt import SttSettings, open_recognizer


def decode(recognizer: SphinxRecognizer | ProcessRecognizer, samples: object) -> tuple[str, str]:
    recognizer.start()
    for i in range(0, len(samples), 1600):  # type: ignore[arg-type]
        recognizer.feed(samples[i : i + 1600])  # type: ignore[index]
    return recognizer.partial(), recognizer.finish()


def test_a_worker_hears_what_the_in_process_decoder_hears(speech: Speech) -> None:
    samples = pad(silence(0.3), speech.flite("what is the weather in paris"), silence(0.3))
    worker = open_recognizer(SttSettings(decode_in_processes=True))
    assert isinstance(worker, ProcessRecognizer)
    try:
        assert decode(worker, samples) == decode(SphinxRecognizer(), samples)
        assert decode(worker, samples)[1] == "what is the weather in paris"
    finally:
        worker.close()


def test_a_dead_worker_is_a_clear_error_not_a_hang(speech: Speech) -> None:
    worker = ProcessRecognizer(phrases=["what time is it"])
    worker.start()
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(AudioError, match="worker process ended"):
        worker.feed(speech.flite("what time is it"))
    worker.close()


def test_a_bad_setting_in_the_worker_comes_back_as_its_error() -> None:
    with pytest.raises(AudioError, match="dictionary lacks"):
        ProcessRecognizer(phrases=["frobnicate the quux"])
