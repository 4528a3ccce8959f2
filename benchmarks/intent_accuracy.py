"""Intent accuracy of the local model on held-out phrasings, before and after hassil.

``python benchmarks/intent_accuracy.py`` scores two engines on
``benchmarks/data/intent_heldout.jsonl`` (phrasings written as people say them to a voice
assistant, never used to develop the rules) and prints, per intent and overall, how often
each names the right intent and how often it also fills the expected slots:

* ``before``: the hand-written engine as of commit :data:`BEFORE_COMMIT`, read from git into
  a temporary package (so the comparison is made in the same run, on the same data);
* ``after``: :func:`loomk.llm.local.understand` as it is now.

A case's ``slots`` name only the slots that matter; other slots the engine adds are
ignored. A math case gives the ``value`` its expression must evaluate to.

Measured when hassil came in (233 phrasings; ``tests/unit/test_intents_hassil.py`` keeps
the engine at or above these):

=========  =====  ===============  ==============
intent     cases  before (intent,  after (intent,
                  +slots)          +slots)
=========  =====  ===============  ==============
lights     40     97.5%, 97.5%     97.5%, 97.5%
timer      35     100%, 100%       100%, 100%
time       26     100%, 100%       100%, 100%
date       21     100%, 100%       100%, 100%
weather    31     96.8%, 96.8%     96.8%, 96.8%
math       25     100%, 100%       100%, 100%
greeting   15     100%, 100%       100%, 100%
help       10     70.0%, 70.0%     70.0%, 70.0%
unknown    30     83.3%, 83.3%     96.7%, 96.7%
all        233    95.7%, 95.7%     97.4%, 97.4%
=========  =====  ===============  ==============

The gain is in ``unknown``: Home Assistant's templates know the fan, the thermostat and
music for what they are, where the rules took them for lights or weather. Of the held-out
commands, the templates alone match 31 of 40 lights, 21 of 35 timers, 6 of 26 time, 4 of
21 date and 3 of 31 weather phrasings; the hand-written rules read the rest.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "intent_heldout.jsonl"
BEFORE_COMMIT = "d8840007451c739e0f9687323fbeeb3fe678ff39"
PACKAGE = "loomk/llm/local"

Engine = Callable[[str], Any]  # returns an object with .name and .slots, like Intent


@dataclass(frozen=True)
class Case:
    """One held-out phrasing: its ``text``, the ``intent`` it asks for, and the ``slots``
    that must be read from it."""

    text: str
    intent: str
    slots: dict[str, Any]


@dataclass(frozen=True)
class Score:
    """How an engine did: per intent (and ``"all"``), cases, right intents, right intents
    with right slots; and the cases it got wrong."""

    cases: Counter[str]
    intent_right: Counter[str]
    slots_right: Counter[str]
    misses: list[tuple[Case, str, dict[str, Any]]]

    def intent_accuracy(self, intent: str = "all") -> float:
        return self.intent_right[intent] / self.cases[intent] if self.cases[intent] else 0.0

    def slot_accuracy(self, intent: str = "all") -> float:
        return self.slots_right[intent] / self.cases[intent] if self.cases[intent] else 0.0


def load_cases(path: Path = DATA) -> list[Case]:
    """The held-out cases in ``path`` (JSON lines)."""
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            cases.append(Case(row["text"], row["intent"], dict(row.get("slots", {}))))
    return cases


def _math_value(expression: object) -> float | None:
    from loomk.actions.providers.math_eval import evaluate

    try:
        return float(evaluate(str(expression)))
    except Exception:  # a wrong expression is a miss, whatever it raises
        return None


def slots_match(case: Case, slots: dict[str, Any]) -> bool:
    """Whether ``slots`` hold every slot ``case`` expects (a math ``value`` is evaluated)."""
    for key, expected in case.slots.items():
        if key == "value":
            got = _math_value(slots.get("expression"))
            if got is None or abs(got - float(expected)) > 1e-9:
                return False
        elif isinstance(expected, str) and isinstance(slots.get(key), str):
            if slots[key].casefold() != expected.casefold():
                return False
        elif slots.get(key) != expected:
            return False
    return True


def score(engine: Engine, cases: Iterable[Case]) -> Score:
    """``engine`` run on every case."""
    cases_n: Counter[str] = Counter()
    intent_right: Counter[str] = Counter()
    slots_right: Counter[str] = Counter()
    misses = []
    for case in cases:
        found = engine(case.text)
        right = found.name == case.intent
        full = right and slots_match(case, dict(found.slots))
        for key in (case.intent, "all"):
            cases_n[key] += 1
            intent_right[key] += right
            slots_right[key] += full
        if not full:
            misses.append((case, found.name, dict(found.slots)))
    return Score(cases_n, intent_right, slots_right, misses)


def engine_before(commit: str = BEFORE_COMMIT) -> Engine:
    """``understand`` of the hand-written engine at ``commit``, read from git into a
    temporary package named ``loomk_before_<commit[:8]>``."""
    name = f"loomk_before_{commit[:8]}"
    if name not in sys.modules:
        folder = Path(tempfile.mkdtemp(prefix="intent-before-"))
        target = folder / name
        target.mkdir()
        listing = _git("ls-tree", "--name-only", f"{commit}:{PACKAGE}").split()
        for file in listing:
            if file.endswith(".py"):
                source = _git("show", f"{commit}:{PACKAGE}/{file}")
                source = source.replace("loomk.llm.local.", f"{name}.")
                (target / file).write_text(source, encoding="utf-8")
        (target / "__init__.py").write_text("", encoding="utf-8")
        sys.path.insert(0, str(folder))
    module: ModuleType = importlib.import_module(f"{name}.intents")
    understand: Engine = module.understand
    return understand


def engine_after() -> Engine:
    """:func:`loomk.llm.local.understand` as it is in this checkout."""
    from loomk.llm.local import understand

    return understand


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def report(scores: dict[str, Score], intents: Sequence[str]) -> str:
    """A table: per intent, the intent and intent+slots accuracy of every engine."""
    names = list(scores)
    header = ["intent", "cases"] + [f"{n} intent" for n in names] + [f"{n} +slots" for n in names]
    rows = [header]
    for intent in [*intents, "all"]:
        first = scores[names[0]]
        row = [intent, str(first.cases[intent])]
        row += [f"{scores[n].intent_accuracy(intent):.1%}" for n in names]
        row += [f"{scores[n].slot_accuracy(intent):.1%}" for n in names]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: Sequence[str] = ()) -> int:
    """Score both engines and print the table, the time Home Assistant's templates take to
    load and each engine's mean time per phrasing (``--misses`` also lists the misses)."""
    from loomk.llm.local._hassil import load

    cases = load_cases()
    intents = list(dict.fromkeys(c.intent for c in cases))
    loading = load()
    engines = {"before": engine_before(), "after": engine_after()}
    scores = {}
    timings = []
    for name, engine in engines.items():
        started = time.perf_counter()
        scores[name] = score(engine, cases)
        took = (time.perf_counter() - started) / len(cases)
        timings.append(f"{name} {took * 1000:.2f} ms")
    print(f"{len(cases)} held-out phrasings from {DATA.relative_to(ROOT)}")
    print(report(scores, intents))
    print(f"loading Home Assistant's templates (once per process): {loading * 1000:.0f} ms")
    print("mean time per phrasing: " + ", ".join(timings))
    if "--misses" in argv:
        for name, result in scores.items():
            print(f"\n{name}: {len(result.misses)} misses")
            for case, got, slots in result.misses:
                print(f"  {case.text!r}: want {case.intent} {case.slots}, got {got} {slots}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
