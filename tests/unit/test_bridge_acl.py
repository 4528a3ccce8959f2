"""The bridge's access control without sockets: ``bridge_acl`` as configuration, pattern
subsumption, rules, token binding and the rate-limited audit log."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
from bridge_support import capture_audit
from grpclib.const import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomk.bus import pattern_matches, validate_pattern
from loomk.config import SECRET_MASK, BridgeAcl, BridgeAclEntry, Config, describe
from loomk.errors import ConfigError, TopicError
from loomk_bridge._acl import ALLOW_ALL, DENY_ALL, AccessControl, AccessDenied, pattern_covers
from loomk_bridge._audit import AUDIT_LOGGER, AuditLog
from loomk_bridge.cli import security

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- bridge_acl as a setting -----------------------------------------------------------------

TOML = """
[bridge]
address = "127.0.0.1:0"

[bridge_acl."sensor-1"]
publish = ["sensor.>"]
subscribe = ["cmd.sensor.*"]
offer = ["sensor.read"]
token = "s3nsor-token"

[bridge_acl."*"]
publish = ["public.>"]
call = ["search.*", "time.now"]
"""


def test_a_toml_table_per_agent_with_a_default_entry(tmp_path: Path) -> None:
    (tmp_path / "loomk.toml").write_text(TOML)
    config = Config.load(env={}, cwd=tmp_path)
    acl = config.bridge_acl
    assert sorted(acl) == ["*", "sensor-1"]
    assert acl["sensor-1"] == BridgeAclEntry(
        publish=("sensor.>",),
        subscribe=("cmd.sensor.*",),
        offer=("sensor.read",),
        token="s3nsor-token",
    )
    assert acl.entry_for("sensor-1") is acl["sensor-1"]
    assert acl.entry_for("anyone") is acl["*"]
    assert acl["*"].subscribe == ()  # a missing list allows nothing
    assert config.source("bridge_acl").kind == "file"


def test_nested_tables_and_inline_tables_say_the_same(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[bridge.acl.agent1]\npublish = ["x.>"]\n')
    (tmp_path / "b.toml").write_text('bridge_acl = { agent1 = { publish = ["x.>"] } }\n')
    first = Config.load(config_file="a.toml", env={}, cwd=tmp_path).bridge_acl
    second = Config.load(config_file="b.toml", env={}, cwd=tmp_path).bridge_acl
    assert first == second == BridgeAcl({"agent1": BridgeAclEntry(publish=("x.>",))})


def test_the_environment_takes_json_and_keywords_take_a_table_or_a_bridge_acl(
    tmp_path: Path,
) -> None:
    table = {"a1": {"call": ["search.>"], "token": "t-a1"}}
    from_env = Config.load(env={"LOOMK_BRIDGE_ACL": json.dumps(table)}, cwd=tmp_path)
    from_kwarg = Config.load(env={}, cwd=tmp_path, bridge_acl=table)
    built = BridgeAcl.from_table(table)
    assert from_env.bridge_acl == from_kwarg.bridge_acl == built
    assert Config().replace(bridge_acl=built).bridge_acl is built
    assert from_env.source("bridge_acl").name == "LOOMK_BRIDGE_ACL"


def test_no_acl_is_the_default_and_an_acl_is_a_frozen_hashable_value() -> None:
    config = Config()
    assert config.bridge_acl == BridgeAcl()
    assert not config.bridge_acl
    acl = BridgeAcl.from_table({"a": {"publish": ["x"]}, "*": {}})
    assert hash(acl) == hash(BridgeAcl.from_table({"*": {}, "a": {"publish": ["x"]}}))
    assert pickle.loads(pickle.dumps(acl)) == acl
    with pytest.raises(TypeError):
        acl._entries["b"] = BridgeAclEntry()  # type: ignore[index]
    rows = {key: (type_name, default) for key, type_name, default, _ in describe()}
    assert rows["bridge_acl"] == ("BridgeAcl", BridgeAcl())
    assert rows["bridge_max_payload_bytes"] == ("int", 1024 * 1024)
    assert rows["bridge_max_registration_items"] == ("int", 1024)


def test_tokens_are_never_shown(tmp_path: Path) -> None:
    (tmp_path / "loomk.toml").write_text(TOML)
    config = Config.load(env={}, cwd=tmp_path)
    shown = config.as_dict()["bridge_acl"]
    assert shown["sensor-1"]["token"] == SECRET_MASK  # type: ignore[index]
    assert "s3nsor-token" not in repr(config) + str(config.bridge_acl) + repr(shown)
    revealed = config.as_dict(reveal_secrets=True)["bridge_acl"]
    assert BridgeAcl.from_table(revealed) == config.bridge_acl  # round-trips when revealed


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ([["a"]], "expected a table of agent id -> entry, got a list"),
        ({"a b": {}}, "entry 'a b': not an agent id"),
        ({"a.>": {}}, "entry 'a.>': not an agent id"),
        ({"a": ["x"]}, "entry 'a': expected a table, got a list"),
        ({"a": {"publsh": ["x"]}}, "unknown key 'publsh'"),
        ({"a": {"publsh": ["x"]}}, "did you mean 'publish'?"),
        ({"a": {"publish": "x.>"}}, "entry 'a', publish: expected a list of patterns"),
        ({"a": {"subscribe": ["x..y"]}}, "entry 'a', subscribe[0]: 'x..y' is not a topic"),
        ({"a": {"publish": ["x", "y.>.z"]}}, "publish[1]: 'y.>.z'"),
        ({"a": {"publish": ["x*"]}}, "'x*' is not a topic pattern"),
        ({"a": {"publish": [3]}}, "publish[0]: 3 is not a topic pattern"),
        ({"a": {"call": ["fs:*"]}}, "call[0]: 'fs:*' is not a capability name or pattern"),
        ({"a": {"offer": ["bad name"]}}, "offer[0]: 'bad name'"),
        ({"*": {"token": "t1"}}, "entry '*': a token binds one agent id"),
        ({"a": {"token": ""}}, "entry 'a', token: expected printable ASCII"),
        ({"a": {"token": 5}}, "entry 'a', token: expected printable ASCII"),
        ({"a": {"token": "t1"}, "b": {"token": "t1"}}, "entries 'a' and 'b' have the same"),
    ],
)
def test_a_bad_acl_fails_at_load_naming_the_setting_and_the_entry(
    tmp_path: Path, table: object, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path, bridge_acl=table)
    assert info.value.key == "bridge_acl"
    assert says in str(info.value)
    assert "from keyword argument" in str(info.value)


def test_a_bad_acl_in_a_file_or_the_environment_names_where(tmp_path: Path) -> None:
    (tmp_path / "loomk.toml").write_text('[bridge_acl.a]\npublish = ["x..y"]\n')
    with pytest.raises(ConfigError, match=r"'bridge_acl'.*x\.\.y.*loomk\.toml"):
        Config.load(env={}, cwd=tmp_path)
    secret = '{"a": {"token": "hunter 2"}}'  # a space: not a token
    with pytest.raises(ConfigError) as info:
        Config.load(env={"LOOMK_BRIDGE_ACL": secret}, cwd=tmp_path / "..")
    assert "hunter" not in str(info.value)
    assert "LOOMK_BRIDGE_ACL" in str(info.value)
    with pytest.raises(ConfigError) as not_json:
        Config.load(env={"LOOMK_BRIDGE_ACL": "a = 'hunter2'"}, cwd=tmp_path / "..")
    assert "not JSON" in str(not_json.value)
    assert "hunter2" not in str(not_json.value)


def test_an_agent_token_must_not_be_the_bridge_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(
            env={}, cwd=tmp_path, bridge_token="tok-9x", bridge_acl={"a": {"token": "tok-9x"}}
        )
    assert info.value.key == "bridge_acl"
    assert "entry 'a' has the token of bridge_token" in str(info.value)
    assert "tok-9x" not in str(info.value)


_TOPIC_CHARS = st.sampled_from(["a", "b", ".", "*", ">", " ", "\x00", "é", "\t", "x"])


@PROPERTY_SETTINGS
@given(pattern=st.text(_TOPIC_CHARS, min_size=0, max_size=8))
def test_the_configs_topic_grammar_is_the_bus_grammar(pattern: str) -> None:
    try:
        validate_pattern(pattern)
        bus_ok = True
    except TopicError:
        bus_ok = False
    try:
        BridgeAcl.from_table({"a": {"subscribe": [pattern]}})
        config_ok = True
    except ValueError:
        config_ok = False
    assert config_ok == bus_ok


# --- pattern subsumption ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "requested", "covered"),
    [
        (["sensor.>"], "sensor.*.temp", True),
        (["sensor.>"], "sensor.>", True),
        (["sensor.>"], "sensor", False),  # '>' needs one more token
        (["sensor.*"], "sensor.>", False),
        (["sensor.*"], "sensor.x", True),
        (["sensor.*"], "sensor.*", True),
        (["sensor.x"], "sensor.*", False),
        (["a.*", "a.*.>"], "a.>", True),  # together they do
        (["a.*", "a.*.*"], "a.>", False),  # a.b.c.d is left out
        ([">"], ">", True),
        ([">"], "anything.at.*.all.>", True),
        (["*"], ">", False),
        (["*.>"], ">", False),  # a one-token topic is left out
        (["*", "*.>"], ">", True),
        (["a.b"], "a.b", True),
        (["a.b"], "a.b.c", False),
        ([], "a", False),
    ],
)
def test_pattern_covers(allowed: list[str], requested: str, covered: bool) -> None:
    assert pattern_covers(allowed, requested) is covered


LITERALS = ["a", "b"]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    size = draw(st.integers(min_value=1, max_value=4))
    tokens = draw(st.lists(st.sampled_from([*LITERALS, "*"]), min_size=size - 1, max_size=size - 1))
    tokens.append(draw(st.sampled_from([*LITERALS, "*", ">"])))
    return ".".join(tokens)


def _instances(pattern: str, fillers: list[str], extra: int) -> list[str]:
    """Topics ``pattern`` matches: each '*' one filler, '>' 1..extra fillers."""
    out = [""]
    for token in pattern.split("."):
        if token == "*":
            out = [f"{t}.{f}" for t in out for f in fillers]
        elif token == ">":
            tails = [".".join([f] * n) for f in fillers for n in range(1, extra + 1)]
            out = [f"{t}.{tail}" for t in out for tail in tails]
        else:
            out = [f"{t}.{token}" for t in out]
    return [t[1:] for t in out]


@PROPERTY_SETTINGS
@given(allowed=st.lists(patterns(), max_size=5), requested=patterns())
def test_covered_means_every_matching_topic_is_allowed_and_only_then(
    allowed: list[str], requested: str
) -> None:
    # Literals as named, plus a token no pattern names; '>' long enough to pass every
    # allowed pattern's length: if a topic escapes the allowed ones, one of these does.
    topics = _instances(requested, [*LITERALS, "zz"], extra=6)
    assert all(pattern_matches(requested, t) for t in topics)
    every_one_allowed = all(any(pattern_matches(a, t) for a in allowed) for t in topics)
    assert pattern_covers(allowed, requested) is every_one_allowed


# --- rules and tokens ------------------------------------------------------------------------

ACL = BridgeAcl.from_table(
    {
        "sensor-1": {
            "publish": ["sensor.>"],
            "subscribe": ["cmd.sensor.*"],
            "offer": ["sensor.read"],
            "token": "tok-sensor",
        },
        "planner": {"call": ["search.*", "fs:read"], "publish": [">"]},
        "*": {"publish": ["public.>"]},
    }
)


def _access() -> AccessControl:
    return AccessControl(ACL, token="", audit=AuditLog(clock=lambda: 0.0))


def test_no_acl_allows_everything_and_an_unknown_agent_without_default_nothing() -> None:
    assert AccessControl(BridgeAcl(), "").rules_for("anyone") is ALLOW_ALL
    strict = AccessControl(BridgeAcl.from_table({"a": {"publish": ["x"]}}), "")
    assert strict.rules_for("b") is DENY_ALL
    assert strict.rules_for(None) is DENY_ALL
    assert not DENY_ALL.may_publish("x")
    assert not DENY_ALL.may_subscribe("x")


def test_each_agent_gets_its_entry_else_the_default() -> None:
    access = _access()
    sensor, planner, other = (access.rules_for(a) for a in ("sensor-1", "planner", "other"))
    assert sensor.may_publish("sensor.kitchen.temp")
    assert not sensor.may_publish("public.x")  # its own entry replaces '*' entirely
    assert other.may_publish("public.x")
    assert access.rules_for(None) is other
    assert not other.may_publish("sensor.x")
    assert sensor.may_subscribe("cmd.sensor.*")
    assert not sensor.may_subscribe("cmd.>")
    assert sensor.may_subscribe("agent.sensor-1.replies", "sensor-1")  # its own inbox
    assert not sensor.may_subscribe("agent.planner.replies", "sensor-1")
    assert planner.may_call("search.web")
    assert planner.may_call("fs:read")
    assert not planner.may_call("search.web.deep")
    assert not planner.may_call("fs:write")
    assert sensor.may_offer("sensor.read")
    assert not sensor.may_offer("sensor.write")


def test_a_registration_outside_the_rules_names_every_refusal() -> None:
    access = _access()
    with capture_audit() as logs, pytest.raises(AccessDenied) as info:
        access.check_registration(
            "sensor-1", ["cmd.sensor.x", "cmd.>", "x"], ["sensor.read", "shell.exec"], "p:1"
        )
    assert info.value.status is Status.PERMISSION_DENIED
    for refused in ("subscribe to 'cmd.>'", "subscribe to 'x'", "offer 'shell.exec'"):
        assert refused in info.value.message
    assert "cmd.sensor.x" not in info.value.message
    assert [(r["action"], r["target"]) for r in logs] == [
        ("subscribe", "cmd.>"),
        ("subscribe", "x"),
        ("offer", "shell.exec"),
    ]
    assert access.denied == {"publish": 0, "subscribe": 2, "call": 0, "offer": 1}


def test_a_bound_token_is_the_only_way_to_claim_its_agent_and_claims_nothing_else() -> None:
    access = _access()
    ok = access.identify("sensor-1", "Bearer tok-sensor", peer="p:1", method="RegisterAgent")
    assert ok == "sensor-1"
    assert access.identify("", "bearer tok-sensor", peer="p:1", method="ForwardAction") == (
        "sensor-1"  # a call that names no agent acts as the token's
    )
    assert access.identify("planner", None, peer="p:1", method="EventStream") == "planner"
    assert access.identify(None, None, peer="p:1", method="ForwardAction") is None
    refusals: list[tuple[str | None, str | None]] = [
        ("sensor-1", None),
        ("sensor-1", "Bearer wrong"),
        ("sensor-1", "Basic tok-sensor"),
        ("planner", "Bearer tok-sensor"),  # another agent's id with sensor-1's token
    ]
    with capture_audit() as logs:
        for agent, authorization in refusals:
            with pytest.raises(AccessDenied) as info:
                access.identify(agent, authorization, peer="p:2", method="RegisterAgent")
            assert info.value.status is Status.UNAUTHENTICATED
    assert access.refused == 4
    assert {(r["action"], r["target"], r["peer"]) for r in logs} == {
        ("authenticate", "RegisterAgent", "p:2")
    }
    assert all("tok-sensor" not in repr(r) for r in logs)


def test_the_bridge_token_and_agent_tokens_open_the_door() -> None:
    access = AccessControl(ACL, token="global")
    assert access.needs_token
    assert access.token_accepted("Bearer global")
    assert access.token_accepted("Bearer tok-sensor")
    assert not access.token_accepted("Bearer other")
    assert not access.token_accepted(None)
    assert not access.token_accepted("Bearer ")
    assert not AccessControl(ACL, token="").needs_token


# --- the audit log ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _deny(audit: AuditLog, agent: str | None = "a1", action: str = "publish") -> bool:
    return audit.denied(agent=agent, peer="p:1", action=action, target="t.x", reason="r")


def test_audit_records_carry_who_what_and_the_decision() -> None:
    with capture_audit() as logs:
        assert _deny(AuditLog(clock=Clock()))
    (record,) = logs
    assert record == {
        "event": "bridge access denied",
        "component": AUDIT_LOGGER,
        "log_level": "warning",
        "agent": "a1",
        "peer": "p:1",
        "action": "publish",
        "target": "t.x",
        "decision": "denied",
        "reason": "r",
        "suppressed": 0,
    }


def test_a_flood_is_rate_limited_per_agent_and_action_and_the_rest_counted() -> None:
    clock = Clock()
    audit = AuditLog(burst=3, refill_s=10.0, clock=clock)
    with capture_audit() as logs:
        written = [_deny(audit) for _ in range(100)]
        assert _deny(audit, action="call")  # another action has a bucket of its own
        assert _deny(audit, agent="a2")  # so has another agent
        clock.now = 10.0  # one token back
        assert _deny(audit)
        assert not _deny(audit)
    assert written == [True] * 3 + [False] * 97
    mine = [r for r in logs if (r["agent"], r["action"]) == ("a1", "publish")]
    assert [r["suppressed"] for r in mine] == [0, 0, 0, 97]
    assert (audit.written, audit.suppressed) == (6, 98)


def test_the_whole_log_is_bounded_too_and_evicted_counts_are_not_lost() -> None:
    clock = Clock()
    audit = AuditLog(burst=1, total_burst=4, total_refill_s=1.0, max_keys=2, clock=clock)
    with capture_audit() as logs:
        for index in range(10):  # an agent id per call: a fresh bucket each time
            _deny(audit, agent=f"a{index}")
        clock.now = 1.0
        assert _deny(audit, agent="late")
    assert len(logs) == 5
    # a4..a9 were held back by the whole log's bucket; a4..a8 evicted since (two buckets
    # are kept), their counts with them; a9's waits for a9's next record
    assert logs[-1]["suppressed_other"] == 5
    assert audit.suppressed == 6


def test_the_example_of_the_docs_is_a_valid_configuration(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "bridge.md").read_text()
    (example,) = [b for b in re.findall(r"```toml\n(.*?)```", page, re.DOTALL) if "acl" in b]
    (tmp_path / "loomk.toml").write_text(example)
    config = Config.load(env={}, cwd=tmp_path)
    assert sorted(config.bridge_acl) == ["*", "planner", "sensor-1"]
    access = AccessControl(config.bridge_acl, config.bridge_token)
    planner = access.rules_for("planner")
    assert planner.may_subscribe("sensor.*.temp")
    assert planner.may_call("fs:read")
    assert access.rules_for("sensor-1").may_subscribe("agent.sensor-1.replies", "sensor-1")
    assert access.token_accepted("Bearer sensor-1-secret")
    assert config.bridge_tls_cert == str(tmp_path / "certs" / "bridge.pem")


def test_bridge_serve_says_what_protects_it_without_a_secret() -> None:
    plain = security(Config())
    assert plain == "plaintext; no token; no bridge_acl (every agent may do everything)"
    config = Config().replace(
        bridge_token="tok-global",
        bridge_tls_cert="/c.pem",
        bridge_tls_key="/c.key",
        bridge_tls_client_ca="/ca.pem",
        bridge_acl={"a": {"token": "tok-a"}, "b": {}},
    )
    said = security(config)
    assert said == (
        "TLS with client certificates; bearer token; bridge_acl for 2 agent id(s), 1 bound "
        "to a token, nothing for the others"
    )
    assert "tok-" not in said


def test_a_long_denied_target_is_cut_short_in_the_message_and_the_record() -> None:
    access = _access()
    with capture_audit() as audit:
        message = access.deny("sensor-1", "p:1", "publish", "x" * 100_000)
    assert len(message) < 300
    assert audit[0]["target"] == "x" * 200 + "..."
