"""The ``loomk`` command: benchmarks and configuration at a glance.

``loomk bench bus``     measure the bus against raw trio memory channels (``--json PATH``)
``loomk bench agents``  idle agents' time and memory, delivery through the runtime
``loomk bench state``   acknowledged state writes/s, sync on and off, vs raw plyvel
``loomk bench collab``  request/reply round trips between agents, broker invocations/s
``loomk bench batch``   batch handlers: delivery and state writes vs per-event baselines
``loomk config``        show every setting: its effective value, where it came from, how to set it
``loomk state check DATA_DIR``   check a data directory's database (exit 1 if damaged)
``loomk state repair DATA_DIR``  repair a damaged one with LevelDB's repair (exit 1 if it stays so)
``loomk version``       print the version

The parser's texts are written for a terminal (no markup), and every bench option is
checked before a run starts (:mod:`loomk.bench.options`): a value no run could use is a
usage error, exit code 2.

Exit status 2 means the command could not do its work (a bad setting, a data directory in
use, no database there), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from loomk import StoreCheck, __version__, check_store, repair_store
from loomk.bench.options import SCENARIOS, BenchOptionError, Scenario, json_path, resolve
from loomk.config import Config, describe
from loomk.errors import LoomkError


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def _write_json(path_text: str | None, figures: dict[str, object]) -> int:
    """Write ``figures`` to ``path_text`` if given; 1 (said on stderr) if it cannot be."""
    if path_text:
        path = Path(path_text)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(figures, indent=2) + "\n")
        except OSError as error:
            print(f"loomk: cannot write the figures to {path}: {error}", file=sys.stderr)
            return 1
        print(f"figures written to {path}", file=sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Run ``loomk.bench.{scenario}``: print its table, write its JSON if asked.

    Each size is the one given, else the scenario's ``--quick`` or default size; sizes that
    cannot run together are a usage error (exit code 2), before anything runs."""
    scenario = SCENARIOS[args.scenario]
    given = {option.keyword: getattr(args, option.keyword) for option in scenario.options}
    try:
        options = resolve(scenario, given, quick=args.quick)
    except BenchOptionError as error:
        args.bench_parser.error(str(error))
    module = importlib.import_module(f"loomk.bench.{args.scenario}")
    report = getattr(module, f"run_{args.scenario}_bench")(progress=_progress, **options)
    print(module.format_report(report))
    return _write_json(args.json, report.as_dict())


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
    parser = argparse.ArgumentParser(
        prog="loomk",
        description="The command line of loomk, a trio-based structured-concurrency "
        "microkernel for event-driven AI agents.",
        epilog="Run 'loomk COMMAND --help' for what a command does and its options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser(
        "bench",
        help="run a benchmark and print its table",
        description="Run one benchmark scenario and print its figures beside a baseline "
        "measured in the same run (compare the ratios: absolute numbers move with the "
        "machine and its load).",
        epilog="Run 'loomk bench SCENARIO --help' for a scenario's options.",
    )
    scenarios = bench.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for scenario in SCENARIOS.values():
        _add_scenario(scenarios.add_parser, scenario)

    config = commands.add_parser(
        "config",
        help="show the effective configuration",
        description="Show every setting with its effective value, where that value came "
        "from, its type and default, and the environment variable that sets it.",
    )
    config.set_defaults(handler=_config)
    data = commands.add_parser(
        "state",
        help="check or repair a data directory",
        description="Check a data directory's database, or repair a damaged one.",
    )
    state_commands = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = state_commands.add_parser(
        "check",
        help="check a data directory's database",
        description="Check a data directory's database: exit 0 healthy, 1 damaged, 2 when "
        "it cannot be checked.",
    )
    check.add_argument("data_dir", metavar="DATA_DIR", type=Path)
    check.set_defaults(handler=_state_check)
    repair = state_commands.add_parser(
        "repair",
        help="repair a damaged database (LevelDB's repair)",
        description="Repair a damaged database with LevelDB's repair: exit 0 healthy "
        "afterwards, 1 still damaged, 2 when it cannot be repaired.",
    )
    repair.add_argument("data_dir", metavar="DATA_DIR", type=Path)
    repair.set_defaults(handler=_state_repair)
    version = commands.add_parser(
        "version", help="print the version", description="Print the version of loomk."
    )
    version.set_defaults(handler=_version)
    return parser


def _add_scenario(add_parser: Callable[..., argparse.ArgumentParser], scenario: Scenario) -> None:
    """Add the parser of ``loomk bench {scenario}`` with ``add_parser`` (the scenarios'
    subparsers'): ``--json``, ``--quick`` and the scenario's options, each None when not
    given, so that ``--quick`` can tell what the user chose."""
    sub = add_parser(scenario.name, help=scenario.summary, description=scenario.description)
    sub.add_argument(
        "--json", metavar="PATH", type=json_path, help="also write the figures as JSON to PATH"
    )
    sub.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: every size not given takes its --quick value; sizes given are kept",
    )
    for option in scenario.options:
        sub.add_argument(
            option.flag,
            dest=option.keyword,
            type=option.parse,
            nargs="+" if option.many else None,
            metavar=option.metavar,
            help=option.help_text(),
        )
    sub.set_defaults(handler=_bench, bench_parser=sub)


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
