"""Every Python snippet of the docs (docs/*.md and README.md) names only what exists.

A snippet may be a fragment: it may use the objects the docs write about, ``kernel``,
``ctx`` and ``bus``, and the names an earlier snippet of the same page defined; every other
name it uses it must import or define. Then, against the real package and a live kernel:

- each snippet compiles (top-level ``await`` allowed: fragments run inside ``main``);
- each ``import loomk...`` and ``from loomk... import name`` resolves;
- each ``loomk.a.b`` attribute chain resolves;
- each ``kernel.x``, ``ctx.x`` and ``bus.x`` exists, and each call of such a method passes
  keyword arguments its signature takes.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loomk import Context, Event
from loomk.testing import ScriptedAgent, open_test_kernel

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
CONTEXT_NAMES = {"kernel", "ctx", "bus"}
_FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    tree: ast.Module

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def _snippets(page: Path) -> Iterator[Snippet]:
    text = page.read_text()
    for match in _FENCE.finditer(text):
        code = textwrap.dedent(match.group(2))
        line = text.count("\n", 0, match.start()) + 1
        name = f"{page.relative_to(ROOT)}"
        flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        yield Snippet(name, line, compile(code, f"{name}:{line}", "exec", flags=flags))


def _bound_and_used(tree: ast.Module) -> tuple[set[str], set[str]]:
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else used).add(node.id)
    return bound, used


def _chain(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None for anything but names and attributes."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module, or an attribute path inside one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            if not hasattr(found, part):
                try:
                    found = importlib.import_module(f"{found.__name__}.{part}")
                except (ImportError, AttributeError):
                    return False
            else:
                found = getattr(found, part)
        return True
    return False


SNIPPETS = [snippet for page in PAGES for snippet in _snippets(page)]


def test_the_docs_have_snippets_to_check() -> None:
    assert len(SNIPPETS) >= 15
    assert {s.page for s in SNIPPETS} >= {"docs/collab.md", "docs/models.md", "README.md"}


def test_every_snippet_defines_or_imports_what_it_uses() -> None:
    missing = []
    for page in PAGES:
        earlier: set[str] = set()
        for snippet in _snippets(page):
            bound, used = _bound_and_used(snippet.tree)
            known = bound | earlier | CONTEXT_NAMES | set(dir(builtins))
            missing.extend(f"{snippet}: {name}" for name in sorted(used - known))
            earlier |= bound
    assert missing == []


@pytest.mark.parametrize("snippet", SNIPPETS, ids=str)
def test_every_loomk_import_and_attribute_exists(snippet: Snippet) -> None:
    for node in ast.walk(snippet.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0].startswith("loomk"):
                    assert _resolves(alias.name), f"{snippet}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loomk"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                assert _resolves(name), f"{snippet}: from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain is not None and chain[0] == "loomk":
                assert _resolves(".".join(chain)), f"{snippet}: {'.'.join(chain)}"


def _calls_on(tree: ast.Module, root: str) -> Iterator[tuple[list[str], ast.Call | None]]:
    """Each ``root.x...`` chain used in ``tree``, with the call it is the function of."""
    calls = {id(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
            chain = _chain(node)
            if chain is not None and chain[0] == root:
                yield chain, calls.get(id(node))


async def test_every_kernel_ctx_and_bus_member_exists_and_takes_its_keywords() -> None:
    contexts: list[Context] = []

    async def keep(ctx: Context) -> None:
        contexts.append(ctx)

    problems = []
    async with open_test_kernel() as kernel:
        await kernel.spawn(ScriptedAgent("probe", on_start=keep))
        await kernel.bus.publish("nowhere", Event("nothing"))
        objects = {"kernel": kernel, "ctx": contexts[0], "bus": kernel.bus}
        for snippet in SNIPPETS:
            for root, base in objects.items():
                for chain, call in _calls_on(snippet.tree, root):
                    found: Any = base
                    for part in chain[1:]:
                        if not hasattr(found, part):
                            problems.append(f"{snippet}: {'.'.join(chain)}: no {part!r}")
                            break
                        found = getattr(found, part)
                    else:
                        if call is not None and callable(found):
                            keywords = {k.arg: None for k in call.keywords if k.arg}
                            positional = [None] * len(call.args)
                            try:
                                inspect.signature(found).bind(*positional, **keywords)
                            except TypeError as error:
                                problems.append(f"{snippet}: {'.'.join(chain)}(): {error}")
    assert problems == []


_FILE_NAME = re.compile(r"\.(toml|py|md|json)$")


def test_every_loomk_name_the_prose_spells_out_exists() -> None:
    """Inline code such as `loomk.llm.routing` or `loomk.actions.BrokerStats` names a
    module or attribute that exists (file names such as `loomk.toml` aside, and quoted
    strings such as the metadata key `"loomk.batch"`)."""
    missing = []
    for page in PAGES:
        prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if span.startswith('"'):
                continue
            for dotted in re.findall(r"\bloomk(?:_\w+)?(?:\.\w+)+", span):
                if not _FILE_NAME.search(dotted) and not _resolves(dotted):
                    missing.append(f"{page.relative_to(ROOT)}: {dotted} (in `{span}`)")
    assert missing == []
