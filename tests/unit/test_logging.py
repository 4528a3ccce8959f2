"""Logging never takes the kernel down, and follows the stderr of the moment."""

from __future__ import annotations

import io
import sys

import pytest

from loomk.telemetry.logging import _StderrLogger


def test_lines_go_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = _StderrLogger()
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logger.error("one")
    monkeypatch.setattr(sys, "stderr", second)
    logger.info("two")
    assert first.getvalue() == "one\n"
    assert second.getvalue() == "two\n"


def test_a_closed_stderr_drops_the_line_instead_of_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    _StderrLogger().error("lost, but nothing breaks")  # must not raise
