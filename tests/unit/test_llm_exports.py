"""What ``loomk.llm`` offers, as its docstring and docs/models.md say: every class, function
and type alias of its subsystems, the client's error codes and provider names and the
event types published, each the very object its package defines; the tuning constants only
from their own package; the client's names loaded only when first asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import loomk.llm
from loomk.llm import client, local, republish, routing

ROOT = Path(__file__).resolve().parents[2]
SUBSYSTEMS = [client, local, routing, republish]

KEPT_IN_THEIR_PACKAGE = {
    local: {
        "HIGH",
        "PARTIAL",
        "UNKNOWN",
        "INTENTS",
        "MAX_CHARS",
        "MAX_TIMER_SECONDS",
        "MODEL_NAME",
        "TEXT_EVENT_TYPES",
        "TEXT_TYPE_SUFFIXES",
    },
    routing: {"CLOUD_COSTS", "DEFAULT_MASKED_FIELDS", "MASK"},
}


@pytest.mark.parametrize("package", SUBSYSTEMS, ids=lambda m: m.__name__)
def test_every_public_name_but_the_tuning_constants_is_importable_from_loomk_llm(
    package: ModuleType,
) -> None:
    kept = KEPT_IN_THEIR_PACKAGE.get(package, set())
    assert kept <= set(package.__all__)  # the list names real names
    for name in set(package.__all__) - kept:
        assert name in loomk.llm.__all__, name
        assert getattr(loomk.llm, name) is getattr(package, name), name
    for name in kept:
        assert name.isupper(), name  # constants, not classes or functions
        assert name not in loomk.llm.__all__, name
        assert not hasattr(loomk.llm, name), name


def test_loomk_llm_offers_nothing_but_its_subsystems_names() -> None:
    offered = set().union(*(set(package.__all__) for package in SUBSYSTEMS))
    kept = set().union(*KEPT_IN_THEIR_PACKAGE.values())
    assert set(loomk.llm.__all__) == offered - kept
    assert len(loomk.llm.__all__) == len(set(loomk.llm.__all__))
    assert set(loomk.llm.__all__) <= set(dir(loomk.llm))  # the lazy names included


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'LLMClientt'"):
        _ = loomk.llm.LLMClientt


def test_the_client_names_load_the_client_only_when_asked_for() -> None:
    code = (
        "import sys, loomk.llm\n"
        "before = 'loomk.llm.client' in sys.modules\n"
        "names = dir(loomk.llm)\n"
        "from loomk.llm import LLM_TIMEOUT, Provider\n"
        "print(before, 'LLMClient' in names, LLM_TIMEOUT, 'loomk.llm.client' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "LLM_TIMEOUT", "True"]
