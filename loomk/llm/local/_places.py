"""Places and time zones named in a question, from a built-in table and IANA zone names.

Time, date and weather questions name where they mean ("in Tokyo", "new york time",
"Europe/Paris", "pst"); this finds the place, its display name and its zone offline. A
place missing from the table is still returned by name, so a question can say which
place it did not know.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Collection, Sequence

from loomk.llm.local._text import word_set

__all__ = ["city_named", "city_names", "zone_slots"]

_IANA = re.compile(r"(?<![\w/])[A-Za-z][A-Za-z_+\-]*(?:/[A-Za-z0-9_+\-]+)+")

_CITIES: dict[str, tuple[str, str]] = {
    key: (key.title() if display == "" else display, zone)
    for key, display, zone in (
        ("tokyo", "", "Asia/Tokyo"),
        ("osaka", "", "Asia/Tokyo"),
        ("japan", "", "Asia/Tokyo"),
        ("seoul", "", "Asia/Seoul"),
        ("korea", "", "Asia/Seoul"),
        ("beijing", "", "Asia/Shanghai"),
        ("shanghai", "", "Asia/Shanghai"),
        ("china", "", "Asia/Shanghai"),
        ("hong kong", "", "Asia/Hong_Kong"),
        ("taipei", "", "Asia/Taipei"),
        ("singapore", "", "Asia/Singapore"),
        ("bangkok", "", "Asia/Bangkok"),
        ("jakarta", "", "Asia/Jakarta"),
        ("manila", "", "Asia/Manila"),
        ("kuala lumpur", "", "Asia/Kuala_Lumpur"),
        ("mumbai", "", "Asia/Kolkata"),
        ("delhi", "", "Asia/Kolkata"),
        ("new delhi", "", "Asia/Kolkata"),
        ("bangalore", "", "Asia/Kolkata"),
        ("kolkata", "", "Asia/Kolkata"),
        ("india", "", "Asia/Kolkata"),
        ("karachi", "", "Asia/Karachi"),
        ("dhaka", "", "Asia/Dhaka"),
        ("dubai", "", "Asia/Dubai"),
        ("tehran", "", "Asia/Tehran"),
        ("istanbul", "", "Europe/Istanbul"),
        ("moscow", "", "Europe/Moscow"),
        ("kyiv", "", "Europe/Kyiv"),
        ("athens", "", "Europe/Athens"),
        ("helsinki", "", "Europe/Helsinki"),
        ("cairo", "", "Africa/Cairo"),
        ("johannesburg", "", "Africa/Johannesburg"),
        ("cape town", "", "Africa/Johannesburg"),
        ("nairobi", "", "Africa/Nairobi"),
        ("lagos", "", "Africa/Lagos"),
        ("london", "", "Europe/London"),
        ("manchester", "", "Europe/London"),
        ("edinburgh", "", "Europe/London"),
        ("uk", "the UK", "Europe/London"),
        ("england", "", "Europe/London"),
        ("dublin", "", "Europe/Dublin"),
        ("lisbon", "", "Europe/Lisbon"),
        ("madrid", "", "Europe/Madrid"),
        ("barcelona", "", "Europe/Madrid"),
        ("spain", "", "Europe/Madrid"),
        ("paris", "", "Europe/Paris"),
        ("france", "", "Europe/Paris"),
        ("brussels", "", "Europe/Brussels"),
        ("amsterdam", "", "Europe/Amsterdam"),
        ("berlin", "", "Europe/Berlin"),
        ("munich", "", "Europe/Berlin"),
        ("germany", "", "Europe/Berlin"),
        ("zurich", "", "Europe/Zurich"),
        ("geneva", "", "Europe/Zurich"),
        ("vienna", "", "Europe/Vienna"),
        ("prague", "", "Europe/Prague"),
        ("warsaw", "", "Europe/Warsaw"),
        ("budapest", "", "Europe/Budapest"),
        ("rome", "", "Europe/Rome"),
        ("milan", "", "Europe/Rome"),
        ("italy", "", "Europe/Rome"),
        ("stockholm", "", "Europe/Stockholm"),
        ("oslo", "", "Europe/Oslo"),
        ("copenhagen", "", "Europe/Copenhagen"),
        ("reykjavik", "", "Atlantic/Reykjavik"),
        ("new york", "", "America/New_York"),
        ("new york city", "New York City", "America/New_York"),
        ("nyc", "New York City", "America/New_York"),
        ("boston", "", "America/New_York"),
        ("washington", "", "America/New_York"),
        ("miami", "", "America/New_York"),
        ("atlanta", "", "America/New_York"),
        ("toronto", "", "America/Toronto"),
        ("montreal", "", "America/Toronto"),
        ("chicago", "", "America/Chicago"),
        ("houston", "", "America/Chicago"),
        ("dallas", "", "America/Chicago"),
        ("mexico city", "", "America/Mexico_City"),
        ("denver", "", "America/Denver"),
        ("phoenix", "", "America/Phoenix"),
        ("los angeles", "", "America/Los_Angeles"),
        ("san francisco", "", "America/Los_Angeles"),
        ("seattle", "", "America/Los_Angeles"),
        ("las vegas", "", "America/Los_Angeles"),
        ("vancouver", "", "America/Vancouver"),
        ("anchorage", "", "America/Anchorage"),
        ("honolulu", "", "Pacific/Honolulu"),
        ("sao paulo", "São Paulo", "America/Sao_Paulo"),
        ("rio de janeiro", "", "America/Sao_Paulo"),
        ("buenos aires", "", "America/Argentina/Buenos_Aires"),
        ("santiago", "", "America/Santiago"),
        ("lima", "", "America/Lima"),
        ("bogota", "Bogotá", "America/Bogota"),
        ("sydney", "", "Australia/Sydney"),
        ("melbourne", "", "Australia/Melbourne"),
        ("brisbane", "", "Australia/Brisbane"),
        ("perth", "", "Australia/Perth"),
        ("auckland", "", "Pacific/Auckland"),
        ("new zealand", "", "Pacific/Auckland"),
    )
}
_ZONE_WORDS: dict[str, tuple[str, str]] = {  # names of zones that are not places
    "utc": ("UTC", "UTC"),
    "gmt": ("GMT", "GMT"),
    "est": ("Eastern Time", "America/New_York"),
    "eastern": ("Eastern Time", "America/New_York"),
    "cst": ("Central Time", "America/Chicago"),
    "central": ("Central Time", "America/Chicago"),
    "mst": ("Mountain Time", "America/Denver"),
    "mountain": ("Mountain Time", "America/Denver"),
    "pst": ("Pacific Time", "America/Los_Angeles"),
    "pacific": ("Pacific Time", "America/Los_Angeles"),
    "cet": ("Central European Time", "Europe/Berlin"),
    "ist": ("India", "Asia/Kolkata"),
    "jst": ("Japan", "Asia/Tokyo"),
}
_NOT_PLACE = word_set(
    "the a an it is what how will be like here there home my area town outside inside now "
    "today tonight tomorrow yesterday weather forecast time date day please this that you me us "
    "moment right currently later week weekend morning afternoon evening night "
    "fahrenheit celsius centigrade degrees metric imperial units"
)
_PLACE_END = word_set(
    "now right currently today tonight tomorrow yesterday please like at this on and or "
    "for during outside moment later is will going to be"
)


def zone_slots(text: str, tokens: Sequence[str]) -> tuple[dict[str, str], bool]:
    """The ``timezone`` and ``place`` slots a time or date question names, and whether a
    place was named that has no zone known here. ``text`` is searched for IANA names as
    given, so the caller bounds its length."""
    zone = _iana_zone(text)
    if zone is not None:
        return {"timezone": zone, "place": zone}, False
    words = _place_after(tokens, ("in", "at", "for"))
    if words:
        known = _lookup(words, _CITIES) or _lookup(words, _ZONE_WORDS)
        if known is None:
            return {"place": _title(words)}, True
        return {"timezone": known[1], "place": known[0]}, False
    known = _lookup(tokens, _CITIES) or _lookup(tokens, _ZONE_WORDS)
    if known is not None:
        return {"timezone": known[1], "place": known[0]}, False
    return {}, False


def city_names() -> dict[str, str]:
    """The cities (and countries) known here: their lower-case name -> display name."""
    return {key: display for key, (display, _zone) in _CITIES.items()}


def city_named(tokens: Sequence[str], topics: Collection[str]) -> str | None:
    """The place a question names: after "in"/"for"/"at"/"near", a known city anywhere, or
    the words after a leading word of ``topics`` ("weather springfield")."""
    place = _place_after(tokens, ("in", "for", "at", "near"))
    if not place and tokens and tokens[0] in topics:
        rest = [w for w in tokens[1:] if w not in _PLACE_END]
        place = rest if _is_place(rest) and len(rest) <= 3 else []
    if place:
        known = _CITIES.get(" ".join(place))
        return known[0] if known is not None else _title(place)
    known = _lookup(tokens, _CITIES)
    return known[0] if known is not None else None


def _lookup(words: Sequence[str], table: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The longest entry of ``table`` named by consecutive ``words``, first one first."""
    for size in (3, 2, 1):
        for i in range(len(words) - size + 1):
            found = table.get(" ".join(words[i : i + size]))
            if found is not None:
                return found
    return None


def _place_after(tokens: Sequence[str], prepositions: Sequence[str]) -> list[str]:
    """The place named after the last of ``prepositions`` that names one ("in New York
    right now" gives new york), or []."""
    for i in range(len(tokens) - 1, -1, -1):
        if tokens[i] not in prepositions:
            continue
        words: list[str] = []
        for word in tokens[i + 1 :]:
            if word in _PLACE_END:
                break
            words.append(word)
        while words and words[0] in ("the", "my"):
            words.pop(0)
        if _is_place(words):
            return words
    return []


def _is_place(words: Sequence[str]) -> bool:
    return (
        0 < len(words) <= 4
        and all(w.isalpha() for w in words)
        and not all(w in _NOT_PLACE for w in words)
        and words[-1] not in _NOT_PLACE
    )


def _title(words: Sequence[str]) -> str:
    """A place's words as a name: "new york" gives "New York"."""
    return " ".join(w[:1].upper() + w[1:] for w in words)


def _iana_zone(text: str) -> str | None:
    """An IANA zone name written in ``text`` ("Europe/Paris", "america/new_york")."""
    candidates: list[str] = _IANA.findall(text)
    for candidate in candidates[:5]:
        if len(candidate) > 64:
            continue
        fixed = "/".join(
            "_".join(w[:1].upper() + w[1:] for w in part.split("_")) if part.islower() else part
            for part in candidate.split("/")
        )
        for name in dict.fromkeys((candidate, fixed)):
            try:
                zoneinfo.ZoneInfo(name)
            except (ValueError, KeyError, OSError):
                continue
            return name
    return None
