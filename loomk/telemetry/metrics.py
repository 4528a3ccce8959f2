"""Metrics: fixed-bucket histograms for the hot path, metric families read on demand.

The kernel's counters already live where the work happens (the bus's per-topic counts, each
agent's record, the broker's per-capability counts); nothing is added per event to export
them. A :class:`MetricsRegistry` holds *sources*, plain callables that read those counters
into :class:`MetricFamily` values when someone asks (a Prometheus scrape, the dashboard's
snapshot), and renders them in Prometheus' text format. What the counters cannot give, a
latency spread, is kept in a :class:`Histogram`: fixed buckets, one ``bisect`` and three
additions per observation, no lock (everything runs on the kernel's trio thread).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "LATENCY_BUCKETS_S",
    "Histogram",
    "HistogramSnapshot",
    "MetricFamily",
    "MetricKind",
    "MetricSource",
    "MetricsRegistry",
    "Sample",
    "render_prometheus",
]

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) of the latency buckets: 50 µs to 30 s, and +Inf above."""


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram's counts at one moment: ``counts[i]`` observations fell at or under
    ``bounds[i]`` and above the bound before it; the last count is those above every bound."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float
    max: float

    def quantile(self, q: float) -> float:
        """An estimate of the ``q`` quantile (0..1), interpolated inside its bucket and
        never above the largest value seen; 0.0 with no observations."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile is between 0 and 1, got {q!r}")
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, in_bucket in enumerate(self.counts):
            if in_bucket and seen + in_bucket >= rank:
                lower = self.bounds[index - 1] if index else 0.0
                upper = self.bounds[index] if index < len(self.bounds) else self.max
                estimate = lower + (upper - lower) * ((rank - seen) / in_bucket)
                return min(estimate, self.max)
            seen += in_bucket
        return self.max

    @property
    def mean(self) -> float:
        """The mean of the observations (0.0 with none)."""
        return self.sum / self.count if self.count else 0.0

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or under it)`` per bucket, ending with +Inf:
        Prometheus' ``le`` buckets."""
        total = 0
        buckets: list[tuple[float, int]] = []
        for bound, in_bucket in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += in_bucket
            buckets.append((bound, total))
        return buckets


class Histogram:
    """Observations counted into fixed buckets, with their sum and maximum.

    Cheap enough for the hot path: :meth:`observe` is a ``bisect`` and a few additions.
    """

    __slots__ = ("_bounds", "_counts", "count", "max", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        ordered = tuple(float(bound) for bound in bounds)
        if not ordered or list(ordered) != sorted(set(ordered)) or not math.isfinite(ordered[-1]):
            raise ValueError(f"bucket bounds must be finite and strictly increasing: {bounds!r}")
        self._bounds = ordered
        self._counts = [0] * (len(ordered) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (a negative one counts as 0)."""
        if value < 0.0:
            value = 0.0
        self._counts[bisect_left(self._bounds, value)] += 1
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def snapshot(self) -> HistogramSnapshot:
        """The counts now (later observations leave the snapshot as it is)."""
        return HistogramSnapshot(self._bounds, tuple(self._counts), self.count, self.sum, self.max)


MetricKind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled value of a family: a number, or a histogram's snapshot."""

    labels: Mapping[str, str]
    value: float | HistogramSnapshot


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """A named metric and its samples. A counter's ``name`` ends in ``_total``."""

    name: str
    kind: MetricKind
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float | HistogramSnapshot, **labels: str) -> MetricFamily:
        """Append one sample (returns the family, so adds chain)."""
        self.samples.append(Sample(labels, value))
        return self

    def value(self, **labels: str) -> float | HistogramSnapshot | None:
        """The sample with exactly ``labels``, or None."""
        for sample in self.samples:
            if dict(sample.labels) == labels:
                return sample.value
        return None


MetricSource = Callable[[], Iterable[MetricFamily]]
"""Reads counters into metric families when asked; registered with a :class:`MetricsRegistry`."""


class MetricsRegistry:
    """The sources of a kernel's metrics, read on demand.

    The kernel registers its own; an edge (the bridge, the voice pipeline) registers its
    source while it runs and removes it when it stops. A source that raises is skipped
    (and named in ``errors``) so one broken source never hides the others.
    """

    def __init__(self) -> None:
        self._sources: dict[int, tuple[str, MetricSource]] = {}
        self._next = 0
        self.errors: dict[str, str] = {}
        """Source name -> the error its last collection raised."""

    def register(self, name: str, source: MetricSource) -> Callable[[], None]:
        """Add ``source`` (``name`` identifies it in ``errors``); returns its remover."""
        key = self._next
        self._next += 1
        self._sources[key] = (name, source)

        def remove() -> None:
            self._sources.pop(key, None)

        return remove

    def sources(self) -> list[str]:
        """The names of the registered sources, in order of registration."""
        return [name for name, _ in self._sources.values()]

    def collect(self) -> list[MetricFamily]:
        """Every source's families, in registration order; families of one name from
        several sources are merged.

        A sample whose family and labels another source already gave, or a family whose
        kind differs from the one of that name already there, is left out and named in
        ``errors``: a scraper refuses a whole exposition with a duplicate series in it.
        """
        merged: dict[str, MetricFamily] = {}
        series: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        for name, source in list(self._sources.values()):
            try:
                families = list(source())
            except Exception as error:  # a broken source must not hide the others
                self.errors[name] = f"{type(error).__name__}: {error}"
                continue
            self.errors.pop(name, None)
            for family in families:
                known = merged.get(family.name)
                if known is None:
                    known = merged[family.name] = MetricFamily(
                        family.name, family.kind, family.help
                    )
                elif known.kind != family.kind:
                    self.errors[name] = (
                        f"{family.name} is a {family.kind} here but a {known.kind} in "
                        "another source: left out"
                    )
                    continue
                for sample in family.samples:
                    key = (family.name, frozenset(sample.labels.items()))
                    if key in series:
                        self.errors[name] = (
                            f"{family.name}{dict(sample.labels)} was given by another "
                            "source already: left out"
                        )
                        continue
                    series.add(key)
                    known.samples.append(sample)
        return list(merged.values())

    def collect_source(self, name: str) -> list[MetricFamily]:
        """The families of the sources registered as ``name`` (none if it raises)."""
        families: list[MetricFamily] = []
        for source_name, source in list(self._sources.values()):
            if source_name != name:
                continue
            try:
                families.extend(source())
            except Exception as error:  # as collect(): a broken source is named, not raised
                self.errors[name] = f"{type(error).__name__}: {error}"
        return families

    def family(self, name: str) -> MetricFamily | None:
        """The family called ``name`` now, or None."""
        return next((f for f in self.collect() if f.name == name), None)

    def render_prometheus(self) -> str:
        """Every family in Prometheus' text exposition format (0.0.4)."""
        return render_prometheus(self.collect())


def render_prometheus(families: Iterable[MetricFamily]) -> str:
    """``families`` in Prometheus' text exposition format, version 0.0.4."""
    lines: list[str] = []
    for family in families:
        name = family.name
        # as Prometheus' own clients write format 0.0.4: HELP and TYPE name the samples
        # (a counter's with its _total), so every parser ties them together
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for sample in family.samples:
            value = sample.value
            if isinstance(value, HistogramSnapshot):
                for bound, total in value.cumulative():
                    labels = {**sample.labels, "le": _number(bound)}
                    lines.append(f"{name}_bucket{_labels(labels)} {total}")
                lines.append(f"{name}_sum{_labels(sample.labels)} {_number(value.sum)}")
                lines.append(f"{name}_count{_labels(sample.labels)} {value.count}")
            else:
                lines.append(f"{name}{_labels(sample.labels)} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_value(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
