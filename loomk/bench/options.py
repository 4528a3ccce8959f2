"""The options of each ``loomk bench`` scenario: what they mean, their checks and sizes.

The command line builds its bench parsers from :data:`SCENARIOS`, so every option is
checked the same way: a value that no run could use (``--repeats 0``, ``--rate -5``,
``--latency-seconds nan``) is refused by argparse with the option's name and exit code 2,
before anything runs, instead of ending in a traceback minutes later.

``--quick`` asks for a smoke run: each size the user did not give takes its ``quick``
value, and a size given explicitly is kept as given (:func:`resolve`). This module only
describes options; it imports no scenario, so building the parser loads no benchmark.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loomk.errors import LoomkError

__all__ = [
    "MAX_LATENCY_SAMPLES",
    "SCENARIOS",
    "BenchOption",
    "BenchOptionError",
    "Scenario",
    "count",
    "json_path",
    "resolve",
    "seconds",
]

MAX_LATENCY_SAMPLES = 2**32
"""The most latency samples a bus run can number (each event carries its index in 4 bytes)."""


class BenchOptionError(LoomkError, ValueError):
    """Options that are each valid but cannot be run together (see :func:`resolve`)."""


def count(text: str) -> int:
    """A size or count: a whole number of at least 1 (``20000`` or ``20_000``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds: a finite number above 0 (``2``, ``0.5``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def json_path(text: str) -> str:
    """Where to write the figures: a file path whose nearest existing ancestor is a
    directory, checked before the run so that a long run is not lost at the end."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got ''")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise argparse.ArgumentTypeError(f"{str(ancestor)!r} is not a directory")
            break
    return text


@dataclass(frozen=True, slots=True)
class BenchOption:
    """One option of a scenario: ``--flag VALUE`` becomes the ``keyword`` argument of the
    scenario's ``run_*_bench``. ``many`` options take one or more values (a tuple)."""

    flag: str
    keyword: str
    parse: Callable[[str], Any]
    default: Any
    quick: Any
    help: str
    metavar: str = "N"
    many: bool = False
    switch: bool = False
    """A flag without a value (``--dashboard``): True when given."""

    def help_text(self) -> str:
        """The help line: what the option means, then its default and ``--quick`` size."""
        return f"{self.help} (default: {_shown(self.default)}; --quick: {_shown(self.quick)})"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A ``loomk bench`` scenario: its one-line ``summary`` (in ``loomk bench --help``), its
    ``description`` (in its own help), its options, and a ``check`` of their combination
    that returns a problem in words, or None."""

    name: str
    summary: str
    description: str
    options: tuple[BenchOption, ...]
    check: Callable[[Mapping[str, Any]], str | None] = lambda _: None


def resolve(scenario: Scenario, given: Mapping[str, Any], *, quick: bool) -> dict[str, Any]:
    """The keyword arguments of the scenario's run: each option's value from ``given``
    (keyed by ``keyword``; None when not given), else its ``quick`` size when ``quick``,
    else its default. Raises :class:`BenchOptionError` when the combination cannot run."""
    chosen: dict[str, Any] = {}
    for option in scenario.options:
        value = given.get(option.keyword)
        if value is None:
            value = option.quick if quick else option.default
        chosen[option.keyword] = tuple(value) if option.many else value
    problem = scenario.check(chosen)
    if problem is not None:
        raise BenchOptionError(problem)
    return chosen


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:_}" if isinstance(value, int) else str(value)


def _latency_samples(chosen: Mapping[str, Any]) -> str | None:
    """The bus latency run sends ``rate x latency_seconds`` events: at least one, and no
    more than their 4-byte index can number."""
    samples = chosen["rate"] * chosen["latency_seconds"]
    if samples < 1:
        return (
            f"--rate {chosen['rate']} x --latency-seconds {chosen['latency_seconds']:g} "
            "gives no latency sample: the product must be at least 1"
        )
    if samples > MAX_LATENCY_SAMPLES:
        return (
            f"--rate {chosen['rate']} x --latency-seconds {chosen['latency_seconds']:g} "
            f"is more than {MAX_LATENCY_SAMPLES:_} latency samples"
        )
    return None


def _repeats(quick: int = 1) -> BenchOption:
    return BenchOption("--repeats", "repeats", count, 3, quick, "keep the best of N runs")


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "bus",
            "bus throughput and latency vs trio channels",
            "Measure 1 publisher -> 1, 10 and 100 subscribers (deliveries/s, each creating "
            "an event and calling an async handler), then publish -> handler latency at a "
            "fixed offered rate; beside raw trio memory channels doing the same work.",
            (
                BenchOption(
                    "--deliveries",
                    "deliveries",
                    count,
                    300_000,
                    20_000,
                    "deliveries per fan-out width",
                ),
                _repeats(),
                BenchOption(
                    "--rate",
                    "rate",
                    count,
                    10_000,
                    5_000,
                    "events offered per second in the latency run",
                    metavar="PER_S",
                ),
                BenchOption(
                    "--latency-seconds",
                    "latency_seconds",
                    seconds,
                    2.0,
                    0.2,
                    "length of each latency run",
                    metavar="SECONDS",
                ),
                BenchOption(
                    "--dashboard",
                    "dashboard",
                    bool,
                    False,
                    False,
                    "also measure a kernel's bus serving the web dashboard to one client, "
                    "beside the same kernel without it (needs loomk[dashboard])",
                    switch=True,
                ),
            ),
            _latency_samples,
        ),
        Scenario(
            "agents",
            "idle agents' cost, delivery through the runtime",
            "Measure delivery to 1, 10 and 100 agents beside as many plain subscriptions, "
            "then the time and memory of spawning idle agents (a fresh process per count) "
            "beside bare trio tasks.",
            (
                BenchOption(
                    "--spawn",
                    "spawn_sizes",
                    count,
                    (1_000, 10_000, 100_000),
                    (200, 1_000),
                    "idle agent counts to spawn, one fresh process each",
                    many=True,
                ),
                BenchOption(
                    "--deliveries",
                    "deliveries",
                    count,
                    200_000,
                    5_000,
                    "deliveries per fan-out width",
                ),
                _repeats(),
            ),
        ),
        Scenario(
            "state",
            "acknowledged state writes/s vs raw plyvel",
            "Measure acknowledged ctx.state writes per second with sync off and on, beside "
            "raw plyvel batches and one fsync'd put per write.",
            (
                BenchOption("--agents", "agents", count, 200, 20, "agents writing at once"),
                BenchOption("--events", "events", count, 100, 10, "handlers per agent"),
                BenchOption("--keys", "keys", count, 5, 5, "state keys written per handler"),
                BenchOption(
                    "--fsync-writes",
                    "fsync_writes",
                    count,
                    500,
                    50,
                    "fsync'd puts of the raw plyvel baseline",
                ),
            ),
        ),
        Scenario(
            "collab",
            "request/reply round trips, broker invocations",
            "Measure sequential ctx.request round trips between two agents (per second, "
            "p50, p99) beside two trio tasks playing ping-pong, and broker invocations of a "
            "no-op provider beside calling it directly.",
            (
                BenchOption(
                    "--round-trips",
                    "round_trips",
                    count,
                    20_000,
                    500,
                    "sequential request/reply round trips",
                ),
                BenchOption(
                    "--invocations", "invocations", count, 50_000, 1_000, "broker invocations"
                ),
                _repeats(),
            ),
        ),
        Scenario(
            "batch",
            "batch handlers vs per-event baselines",
            "Measure delivery 1 -> 1 through an agent's on_batch beside a raw trio channel "
            "handled one event at a time (each side making its events), then acknowledged "
            "state writes from agents' on_batch beside raw plyvel batches of the same keys.",
            (
                BenchOption(
                    "--deliveries", "deliveries", count, 300_000, 20_000, "events delivered"
                ),
                BenchOption("--agents", "agents", count, 200, 20, "agents writing at once"),
                BenchOption("--events", "events", count, 100, 10, "events per agent"),
                BenchOption("--keys", "keys", count, 5, 5, "state keys written per event"),
                _repeats(),
            ),
        ),
    )
}
"""Every ``loomk bench`` scenario by name, in the order ``loomk bench --help`` lists them."""
