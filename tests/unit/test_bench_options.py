"""The bench options: each matches its scenario's run function, sizes are checked, and
``--quick`` fills in only what was not given."""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
from pathlib import Path

import pytest

from loomk.bench.options import (
    MAX_LATENCY_SAMPLES,
    SCENARIOS,
    BenchOptionError,
    count,
    json_path,
    resolve,
    seconds,
)
from loomk.errors import LoomkError


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_option_is_a_keyword_of_the_run_with_the_run_s_default(name: str) -> None:
    run = getattr(importlib.import_module(f"loomk.bench.{name}"), f"run_{name}_bench")
    parameters = inspect.signature(run).parameters
    for option in SCENARIOS[name].options:
        assert parameters[option.keyword].default == option.default, option.flag
    assert resolve(SCENARIOS[name], {}, quick=False) == {
        option.keyword: option.default for option in SCENARIOS[name].options
    }


def test_quick_fills_in_only_the_sizes_not_given() -> None:
    bus = SCENARIOS["bus"]
    chosen = resolve(bus, {"repeats": 5, "rate": None}, quick=True)
    assert chosen == {
        "deliveries": 20_000,
        "repeats": 5,
        "rate": 5_000,
        "latency_seconds": 0.2,
        "dashboard": False,  # a switch: off unless given, --quick or not
    }
    assert resolve(bus, {"dashboard": True}, quick=True)["dashboard"] is True
    spawn = resolve(SCENARIOS["agents"], {"spawn_sizes": [7, 8]}, quick=True)["spawn_sizes"]
    assert spawn == (7, 8)
    assert resolve(SCENARIOS["agents"], {}, quick=True)["spawn_sizes"] == (200, 1_000)


def test_a_latency_run_needs_between_one_and_2_to_the_32_samples() -> None:
    bus = SCENARIOS["bus"]
    with pytest.raises(BenchOptionError, match="gives no latency sample"):
        resolve(bus, {"rate": 1, "latency_seconds": 0.5}, quick=False)
    with pytest.raises(BenchOptionError, match="latency samples"):
        resolve(bus, {"rate": MAX_LATENCY_SAMPLES, "latency_seconds": 1.5}, quick=False)
    assert resolve(bus, {"rate": 1, "latency_seconds": 1.0}, quick=False)["rate"] == 1
    assert issubclass(BenchOptionError, LoomkError)
    assert issubclass(BenchOptionError, ValueError)


def test_counts_and_seconds_refuse_what_no_run_can_use() -> None:
    assert count("20_000") == 20_000
    assert count(" 3 ") == 3
    for bad in ("0", "-1", "2.5", "", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            count(bad)
    assert seconds("0.5") == 0.5
    for bad in ("0", "-1", "nan", "inf", "-inf", "", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds(bad)
    assert math.isclose(seconds("1e-3"), 0.001)


def test_a_json_path_must_be_writable_as_a_file(tmp_path: Path) -> None:
    assert json_path(str(tmp_path / "new" / "dir" / "out.json")).endswith("out.json")
    with pytest.raises(argparse.ArgumentTypeError, match="is a directory"):
        json_path(str(tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="is not a directory"):
        json_path(str(blocker / "out.json"))
    with pytest.raises(argparse.ArgumentTypeError):
        json_path("")


def test_every_option_s_help_says_its_default_and_quick_size() -> None:
    for scenario in SCENARIOS.values():
        assert scenario.summary
        assert scenario.description
        for option in scenario.options:
            assert "(default: " in option.help_text()
            assert "; --quick: " in option.help_text()
    assert (
        SCENARIOS["agents"]
        .options[0]
        .help_text()
        .endswith("(default: 1_000 10_000 100_000; --quick: 200 1_000)")
    )
