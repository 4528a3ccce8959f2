"""The ``loomk`` command: benchmarks and configuration at a glance.

``loomk bench bus``     measure the bus against raw trio memory channels (``--json PATH``)
``loomk bench agents``  idle agents' time and memory, delivery through the runtime
``loomk bench state``   acknowledged state writes/s, sync on and off, vs raw plyvel
``loomk config``        show every setting with its effective value and where to set it
``loomk version``       print the version
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from loomk import __version__
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


def _bench_bus(args: argparse.Namespace) -> int:
    from loomk.bench.bus import format_report, run_bus_bench

    progress = _progress
    if args.quick:
        report = run_bus_bench(
            deliveries=20_000, repeats=1, latency_seconds=0.2, rate=5_000, progress=progress
        )
    else:
        report = run_bus_bench(
            deliveries=args.deliveries,
            repeats=args.repeats,
            latency_seconds=args.latency_seconds,
            rate=args.rate,
            progress=progress,
        )
    print(format_report(report))
    _write_json(args.json, report.as_dict())
    return 0


def _bench_agents(args: argparse.Namespace) -> int:
    from loomk.bench.agents import format_report, run_agents_bench

    if args.quick:
        report = run_agents_bench(
            spawn_sizes=(200, 1_000), deliveries=5_000, repeats=1, progress=_progress
        )
    else:
        report = run_agents_bench(
            spawn_sizes=tuple(args.spawn),
            deliveries=args.deliveries,
            repeats=args.repeats,
            progress=_progress,
        )
    print(format_report(report))
    _write_json(args.json, report.as_dict())
    return 0


def _bench_state(args: argparse.Namespace) -> int:
    from loomk.bench.state import format_report, run_state_bench

    if args.quick:
        report = run_state_bench(agents=20, events=10, keys=5, fsync_writes=50, progress=_progress)
    else:
        report = run_state_bench(
            agents=args.agents, events=args.events, keys=args.keys, progress=_progress
        )
    print(format_report(report))
    _write_json(args.json, report.as_dict())
    return 0


def _config(args: argparse.Namespace) -> int:
    config = Config.load()
    values = config.as_dict()
    width = max(len(key) for key, *_ in describe())
    for key, type_name, default, doc in describe():
        env = "LOOMK_" + key.upper()
        print(f"{key:<{width}}  {values[key]!s:<12} ({type_name}, default {default!s}; {env})")
        print(f"{'':<{width}}  {doc}")
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
    bus = scenarios.add_parser("bus", help="bus throughput and latency vs trio channels")
    bus.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    bus.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    bus.add_argument("--deliveries", type=int, default=300_000, help="per fan-out width")
    bus.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    bus.add_argument("--rate", type=int, default=10_000, help="offered events/s for latency")
    bus.add_argument("--latency-seconds", type=float, default=2.0, help="latency run length")
    bus.set_defaults(handler=_bench_bus)
    agents = scenarios.add_parser("agents", help="idle agents' cost, delivery through the runtime")
    agents.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    agents.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    agents.add_argument(
        "--spawn", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="agent counts"
    )
    agents.add_argument("--deliveries", type=int, default=200_000, help="per fan-out width")
    agents.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    agents.set_defaults(handler=_bench_agents)
    state = scenarios.add_parser("state", help="acknowledged state writes/s vs raw plyvel")
    state.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    state.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    state.add_argument("--agents", type=int, default=200, help="agents writing at once")
    state.add_argument("--events", type=int, default=100, help="handlers per agent")
    state.add_argument("--keys", type=int, default=5, help="state keys written per handler")
    state.set_defaults(handler=_bench_state)

    config = commands.add_parser("config", help="show the effective configuration")
    config.set_defaults(handler=_config)
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
