"""The ``loomk`` command: benchmarks and configuration at a glance.

``loomk bench bus``     measure the bus against raw trio memory channels (``--json PATH``)
``loomk bench agents``  idle agents' time and memory, delivery through the runtime
``loomk bench state``   acknowledged state writes/s, sync on and off, vs raw plyvel
``loomk bench collab``  request/reply round trips between agents, broker invocations/s
``loomk config``        show every setting: its effective value, where it came from, how to set it
``loomk state check DATA_DIR``   check a data directory's database (exit 1 if damaged)
``loomk state repair DATA_DIR``  repair a damaged one with LevelDB's repair (exit 1 if it stays so)
``loomk version``       print the version

Exit status 2 means the command could not do its work (a bad setting, a data directory in
use, no database there), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loomk import StoreCheck, __version__, check_store, repair_store
from loomk.config import Config, describe
from loomk.errors import LoomkError


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def _write_json(path_text: str | None, figures: dict[str, object]) -> None:
    if path_text:
        path = Path(path_text)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {path}", file=sys.stderr)


# Tiny sizes per scenario for ``--quick`` (a smoke run, as the end-to-end tests use).
_QUICK: dict[str, dict[str, Any]] = {
    "bus": {"deliveries": 20_000, "repeats": 1, "latency_seconds": 0.2, "rate": 5_000},
    "agents": {"spawn_sizes": (200, 1_000), "deliveries": 5_000, "repeats": 1},
    "state": {"agents": 20, "events": 10, "keys": 5, "fsync_writes": 50},
    "collab": {"round_trips": 500, "invocations": 1_000, "repeats": 1},
}


def _bench(args: argparse.Namespace) -> int:
    """Run ``loomk.bench.{scenario}``: print its table, write its JSON if asked."""
    module = importlib.import_module(f"loomk.bench.{args.scenario}")
    options = _QUICK[args.scenario] if args.quick else args.options(args)
    report = getattr(module, f"run_{args.scenario}_bench")(progress=_progress, **options)
    print(module.format_report(report))
    _write_json(args.json, report.as_dict())
    return 0


def _config(args: argparse.Namespace) -> int:
    """Every setting: its value (secrets masked), where it came from, its type, default,
    variable and documentation."""
    config = Config.load()
    values = config.as_dict()
    width = max(len(key) for key, *_ in describe())
    for key, type_name, default, doc in describe():
        env = "LOOMK_" + key.upper()
        shown, origin = values[key], f"set by: {config.source(key)}"
        if key == "data_dir" and config.state_temporary:  # the path is not where state goes
            shown = "<a temporary directory per kernel>"
            origin = f"state_temporary is on, so {values[key]} ({origin}) is not used"
        print(f"{key:<{width}}  {shown!s:<12} ({type_name}, default {default!s}; {env})")
        print(f"{'':<{width}}  {origin}")
        print(f"{'':<{width}}  {doc}")
    return 0


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size} bytes"


def _contents(check: StoreCheck) -> str:
    acknowledged = "" if check.acknowledged is None else f", {check.acknowledged} acknowledged"
    return (
        f"{check.keys} keys, {check.batches} write batches{acknowledged}, "
        f"{_size(check.size_bytes)} on disk"
    )


def _state_check(args: argparse.Namespace) -> int:
    """Check a data directory: exit 0 if healthy, 1 if damaged (and how to repair it)."""
    check = check_store(args.data_dir)
    if check.healthy:
        print(f"ok: {check.path}: {_contents(check)}")
        return 0
    print(f"damaged: {check.path}: {check.problem}")
    print(
        f"  to salvage what can be read: loomk state repair {check.path} "
        "(damaged files are set aside in its lost/ directory)"
    )
    return 1


def _state_repair(args: argparse.Namespace) -> int:
    """Repair a data directory: exit 0 if it is healthy afterwards, 1 if not."""
    repair = repair_store(args.data_dir)
    after = repair.after
    if not repair.repaired:
        print(f"ok: {repair.path}: nothing to repair ({_contents(after)})")
        return 0
    print(f"was damaged: {repair.before.problem}")
    if not after.healthy:
        print(f"still damaged: {repair.path}: {after.problem}")
        return 1
    print(f"repaired: {repair.path}: {_contents(after)}")
    if repair.lost_batches:
        print(f"  {repair.lost_batches} acknowledged write batches could not be recovered")
    print(f"  entries that could not be read are gone; damaged files are kept in {after.path}/lost")
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"loomk {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``loomk`` command."""
    parser = argparse.ArgumentParser(prog="loomk", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="run a benchmark and print its table")
    scenarios = bench.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")

    def scenario(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = scenarios.add_parser(name, help=help_text)
        sub.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
        sub.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
        sub.set_defaults(handler=_bench)
        return sub

    bus = scenario("bus", "bus throughput and latency vs trio channels")
    bus.add_argument("--deliveries", type=int, default=300_000, help="per fan-out width")
    bus.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    bus.add_argument("--rate", type=int, default=10_000, help="offered events/s for latency")
    bus.add_argument("--latency-seconds", type=float, default=2.0, help="latency run length")
    bus.set_defaults(
        options=lambda a: {
            "deliveries": a.deliveries,
            "repeats": a.repeats,
            "rate": a.rate,
            "latency_seconds": a.latency_seconds,
        }
    )
    agents = scenario("agents", "idle agents' cost, delivery through the runtime")
    agents.add_argument(
        "--spawn", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="agent counts"
    )
    agents.add_argument("--deliveries", type=int, default=200_000, help="per fan-out width")
    agents.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    agents.set_defaults(
        options=lambda a: {
            "spawn_sizes": tuple(a.spawn),
            "deliveries": a.deliveries,
            "repeats": a.repeats,
        }
    )
    state = scenario("state", "acknowledged state writes/s vs raw plyvel")
    state.add_argument("--agents", type=int, default=200, help="agents writing at once")
    state.add_argument("--events", type=int, default=100, help="handlers per agent")
    state.add_argument("--keys", type=int, default=5, help="state keys written per handler")
    state.set_defaults(options=lambda a: {"agents": a.agents, "events": a.events, "keys": a.keys})

    collab = scenario("collab", "request/reply round trips, broker invocations")
    collab.add_argument("--round-trips", type=int, default=20_000, help="sequential requests")
    collab.add_argument("--invocations", type=int, default=50_000, help="broker calls")
    collab.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    collab.set_defaults(
        options=lambda a: {
            "round_trips": a.round_trips,
            "invocations": a.invocations,
            "repeats": a.repeats,
        }
    )

    config = commands.add_parser("config", help="show the effective configuration")
    config.set_defaults(handler=_config)
    data = commands.add_parser("state", help="check or repair a data directory")
    state_commands = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = state_commands.add_parser("check", help="check a data directory's database")
    check.add_argument("data_dir", metavar="DATA_DIR", type=Path)
    check.set_defaults(handler=_state_check)
    repair = state_commands.add_parser("repair", help="repair a damaged database (LevelDB's)")
    repair.add_argument("data_dir", metavar="DATA_DIR", type=Path)
    repair.set_defaults(handler=_state_repair)
    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loomk`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except LoomkError as error:
        print(f"loomk: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
