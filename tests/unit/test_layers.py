"""The layer rules of docs/architecture.md, as data, checked against every import in the tree.

Each unit (a package under ``loomk``, or a top-level module) lists the units it may import.
Imports count wherever they are written: at the top, inside functions, and under
``TYPE_CHECKING`` (a type-only dependency is still a dependency). Two more rules:

- a ``_private`` module is imported only from inside the package that holds it (the root
  package's ``loomk._hop``, ``loomk._metakeys``, ``loomk._watchers`` and ``loomk._wire``
  are the whole kernel's);
- a ``_private`` name of a module is imported by no other module (a package's, only inside
  the package).

Dynamic imports with a literal name (``importlib.import_module("loomk.x")``) count too, and
``from loomk import x`` counts as importing ``loomk.x`` when ``x`` is a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FOUNDATION = {
    "errors",
    "_metakeys",
    "_hop",
    "_wire",
    "_watchers",
    "events",
    "envelope",
    "config",
    "telemetry",
}

ALLOWED: dict[str, set[str]] = {
    # foundation: values, configuration, logging
    "errors": set(),
    "_metakeys": set(),
    "_hop": {"_metakeys"},
    "_wire": set(),
    "_watchers": set(),
    "events": {"_hop", "_metakeys", "_wire", "errors"},
    "envelope": {"_hop", "_metakeys", "events", "errors"},
    "config": {"errors"},
    "telemetry": {"config", "errors"},
    # services: each knows only the foundation and what is below it here
    "bus": _FOUNDATION,
    "state": _FOUNDATION,
    "actions": _FOUNDATION,
    "collab": _FOUNDATION | {"bus"},
    "llm": _FOUNDATION | {"actions"},
    # bus links: the local half of a mirror of the bus (bridge client, cluster link)
    "links": _FOUNDATION | {"bus", "actions", "collab"},
    # edges: the edge protocol and entry-point discovery, below the kernel that runs them
    "edges": _FOUNDATION,
    # agents see the services, never the kernel
    "agents": _FOUNDATION | {"bus", "state", "actions", "collab", "llm"},
    # the composition root and what stands on it
    # the kernel's metric source reads every service's counters
    "kernel_metrics": _FOUNDATION | {"bus", "state", "actions", "collab", "llm", "agents"},
    "kernel": _FOUNDATION
    | {"bus", "state", "actions", "collab", "llm", "agents", "edges", "kernel_metrics"},
    "testing": _FOUNDATION
    | {"bus", "state", "actions", "collab", "llm", "agents", "edges", "kernel", "links"},
    "bench": _FOUNDATION | {"bus", "state", "actions", "collab", "llm", "agents", "kernel"},
    "cli": _FOUNDATION | {"kernel", "bench", "edges", "__init__"},
    "__init__": _FOUNDATION
    | {"bus", "state", "actions", "collab", "llm", "agents", "edges", "kernel", "links"},
    # edges: the kernel's public API, never each other
    # serving an ASGI app through hypercorn, for the edges that serve HTTP (imports hypercorn)
    "asgi": _FOUNDATION | {"edges"},
    "dashboard": {"loomk"},
    "mcp": {"loomk"},
    "cluster": {"loomk"},
    "loomk_bridge": {"loomk"},
    "loomk_audio": {"loomk"},
}
"""Unit -> the units it may import (``loomk`` stands for any part of the kernel)."""

APART: dict[str, set[str]] = {
    # the three model subsystems and the bus adapter know nothing of each other, but that
    # routing reads the local model's text of an event
    "loomk.llm.client": {"loomk.llm.local", "loomk.llm.routing", "loomk.llm.republish"},
    "loomk.llm.local": {"loomk.llm.client", "loomk.llm.routing", "loomk.llm.republish"},
    "loomk.llm.routing": {"loomk.llm.client", "loomk.llm.republish"},
}
"""Inside a unit: modules under a prefix -> prefixes they must not import."""

_KERNEL_UNITS = {unit for unit in ALLOWED if not unit.startswith("loomk_")}


def _allows(source: str, target: str) -> bool:
    allowed = ALLOWED[source]
    return target in allowed or ("loomk" in allowed and target in _KERNEL_UNITS)


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target, from one module."""

    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    names: tuple[str, ...]  # for ``from target import names``
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> Iterator[Import]:
    for top in ("loomk", "loomk_bridge", "loomk_audio"):
        for path in sorted((ROOT / top).rglob("*.py")):
            module = _module_name(path)
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield Import(module, alias.name, (), node.lineno)
                elif isinstance(node, ast.ImportFrom):
                    yield from _from_import(module, package, node)
                elif isinstance(node, ast.Call) and _is_dynamic_import(node):
                    target = node.args[0]
                    assert isinstance(target, ast.Constant)
                    yield Import(module, str(target.value), (), node.lineno)


def _from_import(module: str, package: str, node: ast.ImportFrom) -> Iterator[Import]:
    """``from target import names``; a name that is itself a module counts as its import."""
    target = node.module or ""
    if node.level:  # relative: resolve against the importing package
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        target = ".".join([*base, target] if target else base)
    names = tuple(alias.name for alias in node.names)
    yield Import(module, target, names, node.lineno)
    for name in names:
        if _exists(f"{target}.{name}"):
            yield Import(module, f"{target}.{name}", (), node.lineno)


def _is_dynamic_import(node: ast.Call) -> bool:
    """``importlib.import_module("...")`` or ``__import__("...")`` with a literal name."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    return (
        named
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def _exists(module: str) -> bool:
    path = ROOT / Path(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _unit(module: str) -> str | None:
    """The layer unit of a dotted module of ours, or None for a third-party module."""
    parts = module.split(".")
    if parts[0] in ("loomk_bridge", "loomk_audio"):
        return parts[0]
    if parts[0] != "loomk":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def _is_package(module: str) -> bool:
    return (ROOT / Path(*module.split(".")) / "__init__.py").exists()


OURS = [item for item in _imports() if _unit(item.target) is not None]


def test_every_unit_of_the_tree_has_rules() -> None:
    units = {_unit(item.module) for item in _imports()}
    assert units <= ALLOWED.keys(), f"units without layer rules: {units - ALLOWED.keys()}"


def test_the_rules_themselves_have_no_cycle() -> None:
    graph = {
        unit: {d for d in deps if d in ALLOWED and d != "loomk"} for unit, deps in ALLOWED.items()
    }
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(unit: str, path: tuple[str, ...]) -> None:
        assert unit not in visiting, f"cycle in the layer rules: {' -> '.join((*path, unit))}"
        if unit in done:
            return
        visiting.add(unit)
        for dependency in graph[unit]:
            visit(dependency, (*path, unit))
        visiting.discard(unit)
        done.add(unit)

    for unit in graph:
        visit(unit, ())


def test_every_import_follows_the_layer_rules() -> None:
    wrong = []
    for item in OURS:
        source, target = _unit(item.module), _unit(item.target)
        assert source is not None
        assert target is not None
        if source == target or _allows(source, target):
            continue
        wrong.append(f"{item.module}:{item.line} imports {item.target} ({source} -> {target})")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_scan_sees_the_imports_it_checks() -> None:
    """The rules would pass vacuously if the scan found nothing: a few edges it must see."""
    edges = {(item.module, item.target) for item in OURS}
    assert ("loomk.llm.client._wire", "loomk.actions.tools") in edges
    assert ("loomk.agents.services", "loomk.bus") in edges  # under TYPE_CHECKING
    assert ("loomk.cli", "loomk") in edges  # from loomk import __version__
    assert any(
        source == "loomk.kernel" and target.startswith("loomk.agents") for source, target in edges
    )


def test_subsystems_inside_a_unit_stay_apart() -> None:
    wrong = [
        f"{item.module}:{item.line} imports {item.target}"
        for item in OURS
        for prefix, forbidden in APART.items()
        if _under(item.module, prefix) and any(_under(item.target, f) for f in forbidden)
    ]
    assert not wrong, "subsystems reaching into each other:\n" + "\n".join(wrong)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_private_modules_are_imported_only_inside_their_package() -> None:
    wrong = []
    for item in OURS:
        parts = item.target.split(".")
        private = [i for i, part in enumerate(parts) if part.startswith("_")]
        if not private:
            continue
        owner = ".".join(parts[: private[0]])  # the package holding the private module
        if item.module == owner or item.module.startswith(owner + "."):
            continue
        wrong.append(f"{item.module}:{item.line} imports {item.target}")
    assert not wrong, "private modules used outside their package:\n" + "\n".join(wrong)


def test_private_names_are_imported_only_inside_their_package() -> None:
    """A ``_name`` of a package's ``__init__`` stays in the package; a ``_name`` of a module
    stays in that module (no sibling reaches into it either)."""
    wrong = []
    for item in OURS:
        names = [name for name in item.names if name.startswith("_") and name != "__version__"]
        if not names:
            continue
        if _is_package(item.target):
            importer = _package_of(item.module, _is_package(item.module))
            if importer == item.target or importer.startswith(item.target + "."):
                continue
        wrong.append(f"{item.module}:{item.line} imports {names} from {item.target}")
    assert not wrong, "private names used outside their owner:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("loomk.agents.context", "loomk.kernel", False),
        ("loomk.bus.bus", "loomk.agents", False),
        ("loomk.llm.client", "loomk.bus", False),
        ("loomk.llm.local", "loomk.actions.broker", True),
        ("loomk.actions.broker", "loomk.llm", False),
        ("loomk.kernel", "loomk.agents", True),
        ("loomk.agents.runtime", "loomk.bench.bus", False),
        ("loomk.events", "loomk.bus", False),
        ("loomk_bridge.server", "loomk.kernel", True),
        ("loomk_bridge.server", "loomk_audio", False),
    ],
)
def test_the_rules_say_what_the_architecture_says(source: str, target: str, expected: bool) -> None:
    """A few edges of docs/architecture.md's graph, so a change to the rules is deliberate."""
    source_unit, target_unit = _unit(source), _unit(target)
    assert source_unit is not None
    assert target_unit is not None
    assert _allows(source_unit, target_unit) is expected
