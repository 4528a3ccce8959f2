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
``loomk NAME ...``      a command contributed by an installed package (``loomk bridge``)

Packages contribute commands through entry points of group ``loomk.commands``: the entry
point's name is the command's name and it loads a :class:`Command`. ``loomk --help`` lists
them without importing them (a missing optional extra must not break the listing); running
one that cannot be imported prints one line naming the fix and exits 2 (its ``--help``
says the same and exits 0). A built-in command's name cannot be taken.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from loomk import StoreCheck, __version__, check_store, repair_store
from loomk.bench.options import SCENARIOS, BenchOptionError, Scenario, json_path, resolve
from loomk.config import Config, describe
from loomk.edges import install_hint
from loomk.errors import LoomkError

if TYPE_CHECKING:  # importlib.metadata loads only when the command line is read
    from importlib.metadata import EntryPoint

__all__ = ["COMMAND_GROUP", "Command", "build_parser", "contributed_commands", "main"]

COMMAND_GROUP = "loomk.commands"
"""The entry-point group packages contribute ``loomk`` subcommands in."""
BENCH_GROUP = "loomk.bench"
"""The entry-point group packages contribute ``loomk bench`` scenarios in."""

_BUILTIN = ("bench", "config", "state", "version")


class Command(Protocol):
    """A ``loomk`` subcommand contributed by a package (entry point group ``loomk.commands``)."""

    @property
    def name(self) -> str:
        """The command's name (the entry point's name is the one used)."""
        ...

    @property
    def help(self) -> str:
        """One line saying what it does: the description of its help page."""
        ...

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's arguments (and subcommands) to its own parser."""
        ...

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; the exit status. A LoomkError raised is said on stderr, exit 2."""
        ...


class _Unavailable(Exception):
    """A contributed command cannot be loaded; the message says why and the fix."""


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
    scenario: Scenario = args.bench_scenario
    given = {option.keyword: getattr(args, option.keyword) for option in scenario.options}
    try:
        options = resolve(scenario, given, quick=args.quick)
    except BenchOptionError as error:
        args.bench_parser.error(str(error))
    module = importlib.import_module(args.bench_module)
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


def contributed_commands(
    entry_points: Iterable[EntryPoint] | None = None,
) -> dict[str, EntryPoint]:
    """Contributed commands by name, sorted, none imported; the installed entry points of
    group ``loomk.commands`` unless ``entry_points`` are given (a seam for tests). Names of
    built-in commands are left out, and of two entry points with one name the first is kept.
    """
    if entry_points is None:
        from importlib.metadata import entry_points as installed

        entry_points = installed(group=COMMAND_GROUP)
    found: dict[str, EntryPoint] = {}
    for point in sorted(entry_points, key=lambda p: p.name):
        if point.name not in _BUILTIN:
            found.setdefault(point.name, point)
    return found


def _origin(point: EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f"the {getattr(dist, 'name', None) or 'loomk'} package"


def _load_command(point: EntryPoint) -> Command:
    """Import the command ``point`` names; :class:`_Unavailable` saying why and the fix."""
    try:
        command = point.load()
    except Exception as error:  # ImportError, AttributeError, or the module's own
        raise _Unavailable(
            f"the {point.name!r} command ({_origin(point)}) cannot be loaded from "
            f"{point.value}: {error} ({type(error).__name__}); to install it: "
            f"{install_hint(point)}"
        ) from error
    if not all(callable(getattr(command, method, None)) for method in ("add_arguments", "run")):
        raise _Unavailable(
            f"the {point.name!r} command ({_origin(point)}): {point.value} is not a loomk "
            "command (it needs name, help, add_arguments and run)"
        )
    return command  # type: ignore[no-any-return]


def _run_contributed(point: EntryPoint, argv: Sequence[str]) -> int:
    """Load the command, parse ``argv`` with its own parser and run it."""
    prog = f"loomk {point.name}"
    try:
        command = _load_command(point)
    except _Unavailable as error:
        if "-h" in argv or "--help" in argv:  # the help page says what is missing
            print(f"usage: {prog} ...\n\n{error}")
            return 0
        print(f"loomk: {error}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=prog, description=str(command.help))
    command.add_arguments(parser)
    return _handle(command.run, parser.parse_args(argv))


def build_parser(contributed: Mapping[str, EntryPoint] | None = None) -> argparse.ArgumentParser:
    """The argument parser of the ``loomk`` command; ``contributed`` commands (by default
    the installed ones) are listed, each parsed by its own parser when it runs."""
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
        _add_scenario(scenarios.add_parser, scenario, f"loomk.bench.{scenario.name}")
    for point in _contributed_scenarios():
        try:
            contributed_scenario = point.load()
        except Exception as error:  # its extra is not installed: say so when asked
            why = (
                f"the {point.name!r} benchmark cannot be loaded from {point.value}: {error}; "
                f"to install it: {install_hint(point)}"
            )
            sub = scenarios.add_parser(point.name, help="(not installed)", description=why)
            sub.set_defaults(handler=_unavailable_bench, why=why)
            continue
        _add_scenario(scenarios.add_parser, contributed_scenario, point.module)

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
    for name, point in (contributed_commands() if contributed is None else contributed).items():
        commands.add_parser(
            name,
            help=f"from {_origin(point)}; 'loomk {name} --help' says more",
            description=f"A command from {_origin(point)}.",
            add_help=False,
        )
    return parser


def _contributed_scenarios() -> list[EntryPoint]:
    """Benchmarks announced by extras in group ``loomk.bench`` (``loomk bench bridge``): each
    names a :class:`~loomk.bench.options.Scenario` in a module that also has
    ``run_{name}_bench`` and ``format_report``, like ``loomk.bench.{name}``."""
    from importlib.metadata import entry_points as installed

    builtin = set(SCENARIOS)
    return sorted(
        (p for p in installed(group=BENCH_GROUP) if p.name not in builtin), key=lambda p: p.name
    )


def _unavailable_bench(args: argparse.Namespace) -> int:
    print(f"loomk bench: {args.why}", file=sys.stderr)
    return 2


def _add_scenario(
    add_parser: Callable[..., argparse.ArgumentParser], scenario: Scenario, module: str
) -> None:
    """Add the parser of ``loomk bench {scenario}`` with ``add_parser`` (the scenarios'
    subparsers'): ``--json``, ``--quick`` and the scenario's options, each None when not
    given, so that ``--quick`` can tell what the user chose; ``module`` runs it."""
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
        if option.switch:
            sub.add_argument(
                option.flag,
                dest=option.keyword,
                action="store_const",
                const=True,
                help=f"{option.help} (off by default)",
            )
            continue
        sub.add_argument(
            option.flag,
            dest=option.keyword,
            type=option.parse,
            nargs="+" if option.many else None,
            metavar=option.metavar,
            help=option.help_text(),
        )
    sub.set_defaults(handler=_bench, bench_parser=sub, bench_scenario=scenario, bench_module=module)


def main(
    argv: Sequence[str] | None = None, *, entry_points: Iterable[EntryPoint] | None = None
) -> int:
    """Entry point of the ``loomk`` console script; ``entry_points`` replace the installed
    ones of group ``loomk.commands`` (a seam for tests)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    contributed = contributed_commands(entry_points)
    if arguments and arguments[0] in contributed:  # the rest is the command's to parse
        return _run_contributed(contributed[arguments[0]], arguments[1:])
    args = build_parser(contributed).parse_args(arguments)
    return _handle(args.handler, args)


def _handle(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command's handler: a LoomkError is said on stderr (exit 2), Ctrl+C is 130."""
    try:
        code: int = handler(args)
    except LoomkError as error:
        print(f"loomk: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
