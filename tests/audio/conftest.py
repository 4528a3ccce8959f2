"""Fixtures of the audio tests: a session-wide maker of real speech clips."""

from __future__ import annotations

import pytest
from audio_support import Speech


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    """Makes (and caches for the session) speech clips with flite and espeak-ng."""
    return Speech(tmp_path_factory.mktemp("speech"))
