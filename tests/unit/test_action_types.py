"""Unit tests for loomk.actions.types: semantic versions, descriptors, results, statuses."""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loomk import CapabilityError
from loomk.actions import (
    ActionCall,
    ActionError,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    ErrorCode,
    ProviderKind,
    parse_version,
)
from loomk.envelope import RESERVED_KEYS, Envelope

# --- a reference semver 2.0 precedence, written from the spec (semver.org, item 11) -------


def _compare_ids(a: str, b: str) -> int:
    a_num, b_num = a.isascii() and a.isdigit(), b.isascii() and b.isdigit()
    if a_num and b_num:
        return (int(a) > int(b)) - (int(a) < int(b))
    if a_num != b_num:  # numeric identifiers have lower precedence than alphanumeric ones
        return -1 if a_num else 1
    return (a > b) - (a < b)  # ASCII sort order


def semver_compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` has lower, equal or higher precedence than ``b``."""
    a_core, _, a_pre = a.partition("-")
    b_core, _, b_pre = b.partition("-")
    a_nums = [int(part) for part in a_core.split(".")]
    b_nums = [int(part) for part in b_core.split(".")]
    if a_nums != b_nums:
        return -1 if a_nums < b_nums else 1
    if not a_pre or not b_pre:  # a release is above its pre-releases
        return (not a_pre) - (not b_pre)
    a_ids, b_ids = a_pre.split("."), b_pre.split(".")
    for x, y in zip(a_ids, b_ids, strict=False):
        order = _compare_ids(x, y)
        if order:
            return order
    return (len(a_ids) > len(b_ids)) - (len(a_ids) < len(b_ids))


_numbers = st.integers(min_value=0, max_value=12)
_numeric_id = st.integers(min_value=0, max_value=30).map(str)
_alnum_id = st.text(alphabet="0123456789abcAZ-", min_size=1, max_size=4).filter(
    lambda s: not s.isdigit()
)
_prerelease = st.lists(st.one_of(_numeric_id, _alnum_id), min_size=1, max_size=4).map(".".join)


@st.composite
def semvers(draw: st.DrawFn) -> str:
    core = f"{draw(_numbers)}.{draw(_numbers)}.{draw(_numbers)}"
    pre = draw(st.none() | _prerelease)
    return core if pre is None else f"{core}-{pre}"


# --- parse_version ------------------------------------------------------------------------


def test_release_is_above_its_prereleases() -> None:
    assert parse_version("1.0.0") > parse_version("1.0.0-rc.1")
    assert parse_version("1.0.0") > parse_version("1.0.0-alpha")
    assert parse_version("1.0.0-rc.1") > parse_version("0.9.9")
    assert parse_version("1.0.1-alpha") > parse_version("1.0.0")


def test_numeric_fields_compare_numerically() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.0")
    assert parse_version("1.0.10") > parse_version("1.0.9")
    assert parse_version("10.0.0") > parse_version("9.99.99")
    assert parse_version("2.0.0-rc.10") > parse_version("2.0.0-rc.9")


def test_numeric_prerelease_ids_are_below_alphanumeric_ones() -> None:
    assert parse_version("1.0.0-1") < parse_version("1.0.0-a")
    assert parse_version("1.0.0-999") < parse_version("1.0.0-0a")
    assert parse_version("1.0.0-alpha.1") < parse_version("1.0.0-alpha.beta")


def test_semver_spec_example_order() -> None:
    # the precedence example of semver.org, item 11
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    shuffled = [ordered[i] for i in (3, 7, 0, 5, 1, 6, 2, 4)]
    assert sorted(shuffled, key=parse_version) == ordered
    keys = [parse_version(v) for v in ordered]
    assert all(a < b for a, b in itertools.pairwise(keys))


def test_equal_versions_have_equal_keys() -> None:
    assert parse_version("1.2.3") == parse_version("1.2.3")
    assert parse_version("1.2.3-rc.1") == parse_version("1.2.3-rc.1")


@given(st.lists(semvers(), min_size=0, max_size=12))
def test_sorting_by_parse_version_agrees_with_semver(versions: list[str]) -> None:
    expected = sorted(versions, key=functools.cmp_to_key(semver_compare))
    assert sorted(versions, key=parse_version) == expected


@given(semvers(), semvers())
def test_pairwise_order_agrees_with_semver(a: str, b: str) -> None:
    ka, kb = parse_version(a), parse_version(b)
    assert (ka > kb) - (ka < kb) == semver_compare(a, b)


@pytest.mark.parametrize(
    "version",
    [
        "",
        "1",
        "1.0",
        "1.0.0.0",
        "v1.0.0",
        "01.0.0",
        "1.00.0",
        "1.0.00",
        "-1.0.0",
        "1.0.0-",
        "1.0.0-rc_1",
        "1.0.0+build.5",
        " 1.0.0",
        "1.0.0 ",
        "a.b.c",
    ],
)
def test_invalid_versions_raise(version: str) -> None:
    with pytest.raises(CapabilityError):
        parse_version(version)


@pytest.mark.parametrize(
    "version",
    [
        pytest.param("1.0.0\n", id="trailing-newline"),
        pytest.param("1.0.0-01", id="numeric-prerelease-leading-zero"),
        pytest.param("1.0.0-rc..1", id="empty-prerelease-identifier"),
        pytest.param("1.0.0-.", id="only-dots-prerelease"),
        pytest.param("1.0.0-rc.", id="trailing-dot-prerelease"),
        pytest.param("1\u0663.0.0", id="non-ascii-digit"),
    ],
)
def test_versions_semver_forbids_raise(version: str) -> None:
    # semver 2.0 item 9: identifiers are non-empty ASCII alphanumerics and hyphens, numeric
    # identifiers have no leading zeros; MAJOR.MINOR.PATCH are ASCII digits.
    with pytest.raises(CapabilityError):
        parse_version(version)


@pytest.mark.parametrize("version", [None, 1, 1.0, b"1.0.0", ("1", "0", "0")])
def test_non_str_versions_raise(version: Any) -> None:
    with pytest.raises(CapabilityError):
        parse_version(version)


# --- CapabilityDescriptor -----------------------------------------------------------------


def test_descriptor_defaults_and_key() -> None:
    d = CapabilityDescriptor("weather.get")
    assert d.version == "0.1.0"
    assert d.provider is ProviderKind.PROVIDER_NATIVE
    assert d.metadata == {}
    assert d.key == "weather.get:0.1.0"
    assert CapabilityDescriptor("tts.speak", "2.0.0-rc.1").key == "tts.speak:2.0.0-rc.1"


def test_descriptor_coerces_provider_kind() -> None:
    d = CapabilityDescriptor("a.b", "1.0.0", 3)  # type: ignore[arg-type]
    assert d.provider is ProviderKind.PROVIDER_MCP


@pytest.mark.parametrize("name", ["a", "weather.get", "my_tool-v2.run", "mcp:files.read", "_x.y"])
def test_valid_names(name: str) -> None:
    assert CapabilityDescriptor(name).name == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".a",
        "a.",
        "a..b",
        "a b",
        "a/b",
        "-a",
        "a.-b",
        "weather get",
        "a.*",
        "\u00e9t\u00e9",
        None,
        5,
        b"a.b",
    ],
)
def test_bad_names_raise(name: Any) -> None:
    with pytest.raises(CapabilityError):
        CapabilityDescriptor(name)


def test_name_with_trailing_newline_raises() -> None:
    with pytest.raises(CapabilityError):
        CapabilityDescriptor("weather.get\n")


@pytest.mark.parametrize("version", ["1.0", "latest", "", "1.0.0+b", None])
def test_bad_descriptor_versions_raise(version: Any) -> None:
    with pytest.raises(CapabilityError):
        CapabilityDescriptor("a.b", version)


@pytest.mark.parametrize(
    "metadata",
    [{"desc": 1}, {1: "x"}, {"schema": {"type": "object"}}, {"a": None}, {"a": b"x"}],
)
def test_non_str_metadata_raises(metadata: Any) -> None:
    with pytest.raises(CapabilityError):
        CapabilityDescriptor("a.b", metadata=metadata)


@pytest.mark.parametrize(
    ("field", "value"),
    [("metadata", None), ("metadata", "desc=x"), ("provider", 99), ("provider", "native")],
)
def test_malformed_fields_raise_capability_error(field: str, value: Any) -> None:
    with pytest.raises(CapabilityError):
        CapabilityDescriptor("a.b", **{field: value})


def test_descriptor_is_frozen() -> None:
    d = CapabilityDescriptor("a.b")
    with pytest.raises(AttributeError):
        d.name = "c"  # type: ignore[misc]


def test_description_is_desc_or_name() -> None:
    assert CapabilityDescriptor("a.b", metadata={"desc": "Does b"}).description == "Does b"
    assert CapabilityDescriptor("a.b").description == "a.b"
    assert CapabilityDescriptor("a.b", metadata={"desc": ""}).description == "a.b"


def test_schema_of_valid_json_object() -> None:
    schema = {"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}}}
    d = CapabilityDescriptor("a.b", metadata={"schema": json.dumps(schema)})
    assert d.schema() == schema


@pytest.mark.parametrize("raw", ["", "{not json", "[1, 2]", '"object"', "42", "null"])
def test_schema_is_none_unless_a_json_object(raw: str) -> None:
    assert CapabilityDescriptor("a.b", metadata={"schema": raw}).schema() is None


def test_schema_absent_is_none() -> None:
    assert CapabilityDescriptor("a.b").schema() is None


# --- ActionCall ---------------------------------------------------------------------------


def test_call_defaults_and_with_args() -> None:
    call = ActionCall("c1", "a.b")
    assert call.payload == b"{}"
    assert call.version == ""
    assert call.headers == {}
    assert call.timeout_ms == 0
    assert call.correlation_id == ""
    args = ActionCall.with_args("c2", "a.b", {"x": 1}, version="1.0.0", timeout_ms=5)
    assert json.loads(args.payload) == {"x": 1}
    assert (args.id, args.capability, args.version, args.timeout_ms) == ("c2", "a.b", "1.0.0", 5)
    raw = ActionCall.with_args("c3", "a.b", b"not json")
    assert raw.payload == b"not json"


def test_with_envelope_fills_the_headers_once() -> None:
    call = ActionCall("c1", "a.b", headers={"sender": "agent.me", "custom": "x"})
    full = call.with_envelope()
    assert full is not call
    assert set(full.headers) == {*RESERVED_KEYS, "custom"}
    assert (full.headers["thread_id"], full.correlation_id) == ("c1", "c1")
    assert (full.headers["sender"], full.headers["custom"]) == ("agent.me", "x")
    assert (full.id, full.capability, full.payload) == (call.id, call.capability, call.payload)
    assert call.headers == {"sender": "agent.me", "custom": "x"}  # the original is unchanged
    assert full.with_envelope() is full  # complete already: kept as it is


def test_with_envelope_on_bare_call_matches_the_envelope_defaults() -> None:
    """The shortcut for calls made by hand fills exactly what the envelope would."""
    bare = ActionCall("c9", "a.b").with_envelope()
    expected = Envelope.from_metadata({}, "c9").as_metadata()
    assert {k: v for k, v in bare.headers.items() if k != "ts"} == {
        k: v for k, v in expected.items() if k != "ts"
    }
    assert int(bare.headers["ts"]) > 0
    assert bare.correlation_id == "c9"
    assert bare.with_envelope() is bare


# --- ActionResult -------------------------------------------------------------------------


def test_success_encodes_output_as_json() -> None:
    result = ActionResult.success("c1", {"value": 42})
    assert result.id == "c1"
    assert result.status is ActionStatus.ACTION_OK
    assert result.ok
    assert result.code == ""
    assert result.error is None
    assert result.json() == {"value": 42}
    assert json.loads(result.output) == {"value": 42}


def test_success_keeps_bytes_and_encodes_none() -> None:
    assert ActionResult.success("c1", b"\x00raw").output == b"\x00raw"
    none = ActionResult.success("c1")
    assert none.output == b"null"
    assert none.json() is None


def test_success_rejects_unserialisable_output() -> None:
    with pytest.raises(TypeError):
        ActionResult.success("c1", object())


def test_failure_fields() -> None:
    result = ActionResult.failure("c1", ErrorCode.INVALID_PARAMS, "bad x", details={"k": "v"})
    assert result.id == "c1"
    assert result.status is ActionStatus.ACTION_ERROR
    assert not result.ok
    assert result.code == "INVALID_PARAMS"
    assert result.output == b""
    assert result.error == ActionError("INVALID_PARAMS", "bad x", {"k": "v"})


def test_failure_with_status() -> None:
    result = ActionResult.failure("c1", "BUSY", status=ActionStatus.ACTION_RETRYABLE)
    assert result.status is ActionStatus.ACTION_RETRYABLE
    assert not result.ok
    assert result.code == "BUSY"
    assert result.error is not None
    assert result.error.message == ""
    assert result.error.details == {}


def test_failure_copies_details() -> None:
    details = {"k": "v"}
    result = ActionResult.failure("c1", "X", details=details)
    details["k"] = "changed"
    assert result.error is not None
    assert result.error.details == {"k": "v"}


def test_json_of_non_json_output_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Expecting value"):
        ActionResult.success("c1", b"not json").json()


def test_results_compare_by_value() -> None:
    assert ActionResult.success("c1", [1, 2]) == ActionResult.success("c1", [1, 2])
    assert ActionResult.success("c1", [1, 2]) != ActionResult.success("c2", [1, 2])


# --- ActionStatus, ProviderKind -----------------------------------------------------------


def test_status_labels_and_wire_values() -> None:
    assert [(s.label, int(s)) for s in ActionStatus] == [
        ("ok", 0),
        ("error", 1),
        ("timeout", 2),
        ("retryable", 3),
    ]


def test_provider_kind_wire_values() -> None:
    assert [(k.name, int(k)) for k in ProviderKind] == [
        ("PROVIDER_NATIVE", 0),
        ("PROVIDER_WASM", 1),
        ("PROVIDER_GRPC", 2),
        ("PROVIDER_MCP", 3),
    ]


def test_error_codes() -> None:
    assert ErrorCode.INVALID_PARAMS == "INVALID_PARAMS"
    assert ErrorCode.CAPABILITY_ERROR == "CAPABILITY_ERROR"
    assert ErrorCode.ACTION_TIMEOUT == "ACTION_TIMEOUT"
    assert ErrorCode.PROVIDER_UNAVAILABLE == "PROVIDER_UNAVAILABLE"
