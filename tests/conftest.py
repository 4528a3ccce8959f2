"""Every test runs cut off from the machine it runs on.

A developer's ``LOOMK_*``/``VLLM_*`` variables or a ``loomk.toml`` in the directory pytest
was started from must not change what a test sees (``loomk.run`` and ``Config.load`` read
both), so each test starts in an empty directory of its own with those variables removed.
Tests about the environment set what they need with ``monkeypatch``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SETTINGS_VARIABLES = ("LOOMK_", "VLLM_")
_LOOM_VARIABLES = ("REQUEST_TIMEOUT_MS", "LOOM_BRIDGE_ADDR")


@pytest.fixture(autouse=True)
def hermetic_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """No loomk settings from the environment; an empty working directory."""
    for name in list(os.environ):
        if name.startswith(_SETTINGS_VARIABLES) or name in _LOOM_VARIABLES:
            monkeypatch.delenv(name)
    workdir = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(workdir)
    return workdir
