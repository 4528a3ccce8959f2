"""Which packages the model and action layers may import, read from their source.

Dependencies point one way: ``loomk.llm`` uses ``loomk.actions`` (tool calls, the broker,
the ``llm.generate`` seam), never the other way round, and neither reaches up into the
bus, the agents, the kernel, the state or collaboration. Inside ``loomk.llm`` the three
subsystems stay apart: the client and the local model know nothing of each other or of
routing. Every import counts, those under ``TYPE_CHECKING`` and inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import loomk

ROOT = Path(loomk.__file__).parent
UPPER_LAYERS = ("loomk.bus", "loomk.agents", "loomk.kernel", "loomk.state", "loomk.collab")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(package: str) -> dict[str, set[str]]:
    """Every module of ``package`` and the modules it imports (relative imports resolved)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT.parent / package.replace(".", "/")).rglob("*.py")):
        name = module_name(path)
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        found[name] = targets
    return found


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, targets in imports(package).items()
        for target in sorted(targets)
        if any(target == f or target.startswith(f"{f}.") for f in forbidden)
    ]


def test_the_scan_sees_the_imports_it_checks() -> None:
    """The checks below would pass vacuously if the scan found nothing."""
    llm = imports("loomk.llm")
    assert "loomk.actions.tools" in llm["loomk.llm.client._wire"]
    assert "loomk.bus" not in llm["loomk.llm.republish"]
    assert "loomk.llm.client.ChatStream" in llm["loomk.llm.republish"]  # under TYPE_CHECKING


def test_actions_import_nothing_from_llm() -> None:
    assert offending("loomk.actions", ("loomk.llm",)) == []


@pytest.mark.parametrize("package", ["loomk.llm", "loomk.actions"])
def test_models_and_actions_import_nothing_from_the_layers_above(package: str) -> None:
    assert offending(package, UPPER_LAYERS) == []


@pytest.mark.parametrize(
    ("subsystem", "others"),
    [
        ("loomk.llm.client", ("loomk.llm.local", "loomk.llm.routing", "loomk.llm.republish")),
        ("loomk.llm.local", ("loomk.llm.client", "loomk.llm.routing", "loomk.llm.republish")),
        ("loomk.llm.routing", ("loomk.llm.client", "loomk.llm.republish")),
    ],
)
def test_the_llm_subsystems_stay_apart(subsystem: str, others: tuple[str, ...]) -> None:
    assert offending(subsystem, others) == []
