"""Unit tests for loomk.config: sources, precedence, parsing, validation and introspection."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from loomk.config import SECRET_MASK, Config, ConfigSource, describe, split_address
from loomk.errors import ConfigError

DEFAULTS: dict[str, object] = {
    "name": "loomk",
    "data_dir": ".loomk",
    "state_sync": True,
    "state_temporary": False,
    "state_fault": "stop",
    "memory_max_items": 256,
    "memory_max_bytes": 262144,
    "log_level": "warning",
    "log_format": "console",
    "log_levels": "",
    "log_mask_fields": "",
    "tracing": False,
    "builtin_capabilities": True,
    "action_timeout_s": 30.0,
    "llm_base_url": "",
    "llm_model": "qwen2.5-0.5b-instruct",
    "llm_api_key": "",
    "llm_timeout_s": 30.0,
    "llm_temperature": 0.7,
    "llm_max_retries": 3,
    "bus_realtime_capacity": 64,
    "bus_batched_capacity": 1024,
    "bus_background_capacity": 4096,
    "bus_max_topics": 10000,
    "shutdown_timeout_s": 5.0,
    "agent_start_timeout_s": 30.0,
    "stall_warning_ms": 200,
    "handle_signals": False,
    "bridge_address": "",
    "dashboard_address": "",
    "dashboard_max_clients": 100,
    "dashboard_allowed_hosts": "",
    "bridge_link_address": "",
    "bridge_link_name": "",
    "bridge_link_token": "",
    "bridge_token": "",
    "bridge_tls_cert": "",
    "bridge_tls_key": "",
    "bridge_tls_client_ca": "",
    "bridge_heartbeat_timeout_s": 45.0,
    "bridge_max_message_bytes": 4 * 1024 * 1024,
    "bridge_stream_queue": 512,
    "bridge_max_payload_bytes": 1024 * 1024,
    "bridge_max_registration_items": 1024,
    "bridge_acl": {},
    "mcp_servers": [],
    "cluster_nats_url": "",
    "cluster_share": ">",
    "cluster_node": "",
    "cluster_subject_prefix": "loomk",
    "cluster_ack_wait_s": 30.0,
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_env(tmp_path: Path, **env: str) -> Config:
    return Config.load(env=env, cwd=tmp_path)


def defaults_in(cwd: Path) -> dict[str, object]:
    """What ``Config.load`` gives with no source, run in ``cwd``."""
    return {**DEFAULTS, "data_dir": str(cwd / ".loomk")}


# --- defaults and each source alone -------------------------------------------------------


def test_defaults_when_no_source_is_present(tmp_path: Path) -> None:
    config = Config.load(env={}, cwd=tmp_path)
    assert config.as_dict() == defaults_in(tmp_path)
    assert config == Config(data_dir=tmp_path / ".loomk")
    assert config.data_dir == tmp_path / ".loomk"  # the default, from the working directory
    assert isinstance(config.shutdown_timeout_s, float)


def test_caller_defaults_sit_below_every_source(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", 'name = "filed"\n')
    defaults = {"name": "kit", "log_level": "critical", "shutdown_timeout_s": 1}
    config = Config.load(
        env={"LOOMK_LOG_LEVEL": "error"}, cwd=tmp_path, defaults=defaults, state_sync=False
    )
    assert config.name == "filed"  # the file outranks the caller's default
    assert config.log_level == "error"  # so does the environment
    assert config.shutdown_timeout_s == 1.0  # no source set it: the caller's default
    assert config.state_sync is False  # keyword arguments outrank all
    with pytest.raises(ConfigError, match="shutdown_timeout_s"):
        Config.load(env={}, cwd=tmp_path, defaults={"shutdown_timeout_s": -1})
    with pytest.raises(ConfigError, match=r"unknown key .from the caller's defaults.*'name'"):
        Config.load(env={}, cwd=tmp_path, defaults={"nmae": "typo"})


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"  # type: ignore[misc]


def test_explicit_file_alone(tmp_path: Path) -> None:
    path = write(
        tmp_path / "custom.toml",
        'name = "filed"\ndata_dir = "/var/lib/loomk"\nhandle_signals = true\n'
        "shutdown_timeout_s = 2\n",
    )
    config = Config.load(config_file=path, env={}, cwd=tmp_path)
    assert config.name == "filed"
    assert config.data_dir == Path("/var/lib/loomk")
    assert config.handle_signals is True
    assert config.shutdown_timeout_s == 2.0
    assert isinstance(config.shutdown_timeout_s, float)
    assert config.bus_realtime_capacity == 64


def test_env_alone(tmp_path: Path) -> None:
    config = load_env(tmp_path, LOOMK_NAME="envy", LOOMK_BUS_MAX_TOPICS="500")
    assert config.name == "envy"
    assert config.bus_max_topics == 500


def test_kwargs_alone(tmp_path: Path) -> None:
    config = Config.load(env={}, cwd=tmp_path, log_format="json", bus_batched_capacity=7)
    assert config.log_format == "json"
    assert config.bus_batched_capacity == 7


# --- precedence ---------------------------------------------------------------------------


def test_precedence_file_then_env_then_kwargs(tmp_path: Path) -> None:
    path = write(
        tmp_path / "loomk.toml",
        "bus_realtime_capacity = 10\nbus_batched_capacity = 20\nbus_background_capacity = 30\n",
    )
    config = Config.load(
        config_file=path,
        env={"LOOMK_BUS_BATCHED_CAPACITY": "200", "LOOMK_BUS_BACKGROUND_CAPACITY": "300"},
        cwd=tmp_path,
        bus_background_capacity=3000,
    )
    assert config.bus_realtime_capacity == 10  # file only
    assert config.bus_batched_capacity == 200  # env beats file
    assert config.bus_background_capacity == 3000  # kwarg beats env and file
    assert config.bus_max_topics == 10000  # default


# --- TOML files ---------------------------------------------------------------------------


def test_toml_tables_flatten_with_underscore(tmp_path: Path) -> None:
    write(
        tmp_path / "loomk.toml",
        'name = "top"\n\n[bus]\nrealtime_capacity = 5\nmax_topics = 32\n\n'
        '[log]\nlevel = "error"\nformat = "json"\n',
    )
    config = Config.load(env={}, cwd=tmp_path)
    assert config.name == "top"
    assert config.bus_realtime_capacity == 5
    assert config.bus_max_topics == 32
    assert config.log_level == "error"
    assert config.log_format == "json"


def test_toml_nested_tables_flatten_recursively(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", "[bus.background]\ncapacity = 17\n")
    assert Config.load(env={}, cwd=tmp_path).bus_background_capacity == 17


def test_toml_key_set_twice_through_flattening_is_rejected(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", "bus_max_topics = 20\n[bus]\nmax_topics = 30\n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path)
    assert info.value.key == "bus_max_topics"
    assert "more than once" in str(info.value)


def test_loomk_toml_discovered_in_cwd(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", 'name = "found"\n')
    assert Config.load(env={}, cwd=tmp_path).name == "found"
    (tmp_path / "empty").mkdir()
    assert Config.load(env={}, cwd=tmp_path / "empty").name == "loomk"


def test_loomk_config_env_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", 'name = "from_cwd"\n')
    other = write(tmp_path / "elsewhere.toml", 'name = "from_var"\n')
    config = Config.load(env={"LOOMK_CONFIG": str(other)}, cwd=tmp_path)
    assert config.name == "from_var"


def test_loomk_config_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "k.toml", 'name = "relative"\n')
    config = Config.load(env={"LOOMK_CONFIG": "conf/k.toml"}, cwd=tmp_path)
    assert config.name == "relative"


def test_explicit_file_beats_loomk_config_env(tmp_path: Path) -> None:
    by_var = write(tmp_path / "a.toml", 'name = "by_var"\n')
    explicit = write(tmp_path / "b.toml", 'name = "explicit"\n')
    config = Config.load(config_file=str(explicit), env={"LOOMK_CONFIG": str(by_var)}, cwd=tmp_path)
    assert config.name == "explicit"


def test_missing_explicit_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        Config.load(config_file=missing, env={}, cwd=tmp_path)
    assert info.value.key == "config_file"
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)


def test_missing_file_named_by_loomk_config(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", 'name = "ignored"\n')
    with pytest.raises(ConfigError) as info:
        Config.load(env={"LOOMK_CONFIG": str(tmp_path / "gone.toml")}, cwd=tmp_path)
    assert info.value.key == "config_file"
    assert "gone.toml" in str(info.value)
    assert "LOOMK_CONFIG" in str(info.value)


def test_empty_loomk_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={"LOOMK_CONFIG": ""}, cwd=tmp_path)
    assert info.value.key == "config_file"


def test_toml_syntax_error_names_file_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "loomk.toml", "name = \n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path)
    message = str(info.value)
    assert info.value.key == "config_file"
    assert str(path) in message
    assert "line 1" in message  # tomllib's own message is included


def test_toml_unknown_key_suggests(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", "[bus]\nrealtime_capacty = 3\n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path)
    assert info.value.key == "bus_realtime_capacty"
    assert "did you mean 'bus_realtime_capacity'" in str(info.value)


@pytest.mark.parametrize(
    ("toml", "key", "given"),
    [
        ('bus_max_topics = "many"', "bus_max_topics", "'many'"),
        ("handle_signals = 1", "handle_signals", "1"),
        ("bus_realtime_capacity = true", "bus_realtime_capacity", "True"),
        ("bus_realtime_capacity = 1.5", "bus_realtime_capacity", "1.5"),
        ("shutdown_timeout_s = true", "shutdown_timeout_s", "True"),
        ("name = 3", "name", "3"),
        ("data_dir = [1]", "data_dir", "[1]"),
        ("log_level = 2", "log_level", "2"),
    ],
)
def test_toml_wrong_type_names_file(tmp_path: Path, toml: str, key: str, given: str) -> None:
    path = write(tmp_path / "loomk.toml", toml + "\n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path)
    assert info.value.key == key
    assert f"in {path}" in str(info.value)
    assert f"got {given}" in str(info.value)


def test_toml_out_of_range_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "loomk.toml", "[bus]\nmax_topics = 15\n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path)
    assert info.value.key == "bus_max_topics"
    assert ">= 16" in str(info.value)
    assert "got 15" in str(info.value)
    assert str(path) in str(info.value)


def test_bad_file_value_is_an_error_even_if_overridden(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", "bus_realtime_capacity = 0\n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path, bus_realtime_capacity=8)
    assert info.value.key == "bus_realtime_capacity"


# --- environment --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("128", 128), ("1_000", 1000), (" 42 ", 42)])
def test_env_int(tmp_path: Path, text: str, expected: int) -> None:
    config = load_env(tmp_path, LOOMK_BUS_REALTIME_CAPACITY=text)
    assert config.bus_realtime_capacity == expected


@pytest.mark.parametrize(("text", "expected"), [("2.5", 2.5), ("3", 3.0), ("1e-3", 0.001)])
def test_env_float(tmp_path: Path, text: str, expected: float) -> None:
    config = load_env(tmp_path, LOOMK_SHUTDOWN_TIMEOUT_S=text)
    assert config.shutdown_timeout_s == expected
    assert isinstance(config.shutdown_timeout_s, float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_env_bool_spellings(tmp_path: Path, text: str, expected: bool) -> None:
    # The file holds the opposite value, so a parser that ignores the text cannot pass.
    base = write(tmp_path / "base.toml", f"handle_signals = {str(not expected).lower()}\n")
    config = Config.load(config_file=base, env={"LOOMK_HANDLE_SIGNALS": text}, cwd=tmp_path)
    assert config.handle_signals is expected


def test_env_path(tmp_path: Path) -> None:
    config = load_env(tmp_path, LOOMK_DATA_DIR="/srv/loomk/state")
    assert config.data_dir == Path("/srv/loomk/state")
    assert isinstance(config.data_dir, Path)


def test_env_str(tmp_path: Path) -> None:
    assert load_env(tmp_path, LOOMK_NAME="kernel-7").name == "kernel-7"


def test_env_ignores_unrelated_variables(tmp_path: Path) -> None:
    config = Config.load(env={"HOME": "/root", "LOOMKX": "1", "PATH": "/bin"}, cwd=tmp_path)
    assert config.as_dict() == defaults_in(tmp_path)


@pytest.mark.parametrize(
    ("var", "text", "key"),
    [
        ("LOOMK_BUS_BATCHED_CAPACITY", "lots", "bus_batched_capacity"),
        ("LOOMK_BUS_BATCHED_CAPACITY", "0x10", "bus_batched_capacity"),
        ("LOOMK_BUS_BATCHED_CAPACITY", "2.0", "bus_batched_capacity"),
        ("LOOMK_SHUTDOWN_TIMEOUT_S", "soon", "shutdown_timeout_s"),
        ("LOOMK_HANDLE_SIGNALS", "maybe", "handle_signals"),
        ("LOOMK_DATA_DIR", "", "data_dir"),
        ("LOOMK_LOG_FORMAT", "xml", "log_format"),
    ],
)
def test_env_bad_value_names_variable(tmp_path: Path, var: str, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={var: text}, cwd=tmp_path)
    assert info.value.key == key
    assert f"from environment variable {var}" in str(info.value)
    assert f"got {text!r}" in str(info.value)


def test_env_unknown_variable_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_env(tmp_path, LOOMK_BUS_REALTIME_CAPCITY="5")
    assert info.value.key == "LOOMK_BUS_REALTIME_CAPCITY"
    assert "did you mean 'LOOMK_BUS_REALTIME_CAPACITY'" in str(info.value)


def test_env_unknown_variable_without_close_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_env(tmp_path, LOOMK_ZZZZZZZZZZZZZZZZ="5")
    assert info.value.key == "LOOMK_ZZZZZZZZZZZZZZZZ"
    assert "did you mean" not in str(info.value)


def test_loomk_config_is_not_a_key(tmp_path: Path) -> None:
    path = write(tmp_path / "x.toml", "")
    config = Config.load(env={"LOOMK_CONFIG": str(path)}, cwd=tmp_path)
    assert config.as_dict() == defaults_in(tmp_path)
    assert "config" not in config.as_dict()


# --- keyword overrides --------------------------------------------------------------------


def test_kwarg_unknown_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path, shutdown_timeout=1.0)
    assert info.value.key == "shutdown_timeout"
    assert "did you mean 'shutdown_timeout_s'" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bus_realtime_capacity", True),
        ("bus_realtime_capacity", False),
        ("bus_realtime_capacity", 3.0),
        ("bus_realtime_capacity", "3"),
        ("shutdown_timeout_s", True),
        ("shutdown_timeout_s", "1.0"),
        ("handle_signals", 1),
        ("handle_signals", "true"),
        ("name", 5),
        ("data_dir", 5),
        ("data_dir", b"/tmp"),
    ],
)
def test_kwarg_wrong_type(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path, **{key: value})
    assert info.value.key == key
    message = str(info.value)
    assert "from keyword argument" in message
    assert f"got {value!r} ({type(value).__name__})" in message
    assert "expected" in message


def test_kwarg_accepted_types(tmp_path: Path) -> None:
    config = Config.load(
        env={},
        cwd=tmp_path,
        shutdown_timeout_s=3,
        data_dir=tmp_path / "state",
        handle_signals=True,
        bus_max_topics=16,
    )
    assert config.shutdown_timeout_s == 3.0
    assert isinstance(config.shutdown_timeout_s, float)
    assert config.data_dir == tmp_path / "state"
    assert config.handle_signals is True
    assert config.bus_max_topics == 16
    assert Config.load(env={}, cwd=tmp_path, data_dir="rel/dir").data_dir == tmp_path / "rel/dir"


@pytest.mark.parametrize(
    ("key", "value", "expectation"),
    [
        ("bus_realtime_capacity", 0, ">= 1"),
        ("bus_batched_capacity", -5, ">= 1"),
        ("bus_background_capacity", 0, ">= 1"),
        ("bus_max_topics", 15, ">= 16"),
        ("shutdown_timeout_s", 0, "> 0"),
        ("shutdown_timeout_s", -1.5, "> 0"),
        ("shutdown_timeout_s", float("nan"), "> 0"),
        ("shutdown_timeout_s", float("inf"), "finite"),
        ("name", "", "non-empty"),
        ("name", "two words", "without whitespace"),
        ("name", "tab\there", "without whitespace"),
        ("data_dir", "", "non-empty"),
    ],
)
def test_out_of_range(tmp_path: Path, key: str, value: object, expectation: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path, **{key: value})
    assert info.value.key == key
    assert expectation in str(info.value)
    assert f"got {value!r}" in str(info.value)


def test_range_boundaries_are_accepted(tmp_path: Path) -> None:
    config = Config.load(
        env={},
        cwd=tmp_path,
        bus_realtime_capacity=1,
        bus_batched_capacity=1,
        bus_background_capacity=1,
        bus_max_topics=16,
        shutdown_timeout_s=1e-9,
    )
    assert config.bus_realtime_capacity == 1
    assert config.bus_max_topics == 16
    assert config.shutdown_timeout_s == 1e-9


# --- choices ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "critical"])
def test_log_level_choices_case_insensitive(tmp_path: Path, level: str) -> None:
    assert Config.load(env={}, cwd=tmp_path, log_level=level.upper()).log_level == level
    assert load_env(tmp_path, LOOMK_LOG_LEVEL=level.title()).log_level == level


def test_log_format_case_insensitive_from_file(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", '[log]\nformat = "JSON"\n')
    assert Config.load(env={}, cwd=tmp_path).log_format == "json"


def test_bad_choice_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, cwd=tmp_path, log_level="verbose")
    assert info.value.key == "log_level"
    message = str(info.value)
    assert "'debug', 'info', 'warning', 'error', 'critical'" in message
    assert "got 'verbose'" in message


# --- replace, as_dict, describe -----------------------------------------------------------


def test_replace_returns_validated_copy() -> None:
    base = Config()
    changed = base.replace(log_level="DEBUG", bus_max_topics=64)
    assert changed.log_level == "debug"
    assert changed.bus_max_topics == 64
    assert base.log_level == "warning"  # original untouched
    assert changed.replace() == changed


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"bus_realtime_capacity": 0}, "bus_realtime_capacity"),
        ({"bus_realtime_capacity": True}, "bus_realtime_capacity"),
        ({"log_format": "yaml"}, "log_format"),
        ({"bus_capacity": 5}, "bus_capacity"),
    ],
)
def test_replace_validates(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().replace(**changes)
    assert info.value.key == key


def test_as_dict_uses_strings_for_paths(tmp_path: Path) -> None:
    config = Config.load(env={}, cwd=tmp_path, data_dir=tmp_path / "d", name="k1")
    data = config.as_dict()
    assert list(data) == [f.name for f in dataclasses.fields(Config)]
    assert data["data_dir"] == str(tmp_path / "d")
    assert data["name"] == "k1"
    assert Config.load(env={}, cwd=tmp_path, **data) == config  # round-trips


def test_describe_lists_every_field_in_order() -> None:
    rows = describe()
    fields = dataclasses.fields(Config)
    assert [row[0] for row in rows] == [f.name for f in fields]
    by_key = {key: (type_name, default, doc) for key, type_name, default, doc in rows}
    assert by_key["data_dir"][:2] == ("Path", Path(".loomk"))
    assert by_key["bus_realtime_capacity"][:2] == ("int", 64)
    assert by_key["shutdown_timeout_s"][:2] == ("float", 5.0)
    assert by_key["handle_signals"][:2] == ("bool", False)
    assert by_key["log_level"][:2] == ("str", "warning")
    for key, _type_name, default, doc in rows:
        assert isinstance(doc, str)
        assert doc
        assert default == getattr(Config(), key)


def test_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="config key 'bus_max_topics'"):
        Config().replace(bus_max_topics=1)


# --- the model endpoint: Loom's variable names, and the secret key ---------------------------


def test_loom_variable_names_set_the_llm_settings(tmp_path: Path) -> None:
    config = load_env(
        tmp_path,
        VLLM_BASE_URL="http://10.0.0.5:8000/v1",
        VLLM_MODEL="qwen2.5:7b",
        VLLM_API_KEY="sk-secret-1",
        VLLM_TEMPERATURE="0.2",
        REQUEST_TIMEOUT_MS="2500",
    )
    assert config.llm_base_url == "http://10.0.0.5:8000/v1"
    assert config.llm_model == "qwen2.5:7b"
    assert config.llm_api_key == "sk-secret-1"
    assert config.llm_temperature == 0.2
    assert config.llm_timeout_s == 2.5


def test_loomk_names_win_over_loom_names_and_empty_loom_values_are_unset(tmp_path: Path) -> None:
    config = load_env(
        tmp_path,
        VLLM_MODEL="from-vllm",
        LOOMK_LLM_MODEL="from-loomk",
        VLLM_BASE_URL="",
        VLLM_API_KEY="",
    )
    assert config.llm_model == "from-loomk"
    assert config.llm_base_url == ""
    assert config.llm_api_key == ""


def test_a_bad_loom_timeout_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REQUEST_TIMEOUT_MS") as caught:
        load_env(tmp_path, REQUEST_TIMEOUT_MS="soon")
    assert caught.value.key == "llm_timeout_s"
    with pytest.raises(ConfigError, match="REQUEST_TIMEOUT_MS"):
        load_env(tmp_path, REQUEST_TIMEOUT_MS="0")


def test_the_api_key_is_never_shown(tmp_path: Path) -> None:
    config = load_env(tmp_path, LOOMK_LLM_API_KEY="sk-very-secret")
    assert config.llm_api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(config)
    assert config.as_dict()["llm_api_key"] == SECRET_MASK
    assert config.as_dict(reveal_secrets=True)["llm_api_key"] == "sk-very-secret"


def test_the_toml_file_wins_over_loom_variable_names(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", '[llm]\nbase_url = "http://file:8000/v1"\napi_key = "k-file"\n')
    config = load_env(tmp_path, VLLM_BASE_URL="http://shell:8000/v1", VLLM_API_KEY="k-shell")
    assert (config.llm_base_url, config.llm_api_key) == ("http://file:8000/v1", "k-file")
    config = load_env(tmp_path, LOOMK_LLM_BASE_URL="http://env:8000/v1")
    assert config.llm_base_url == "http://env:8000/v1"  # LOOMK_* still wins over the file


# --- where each value came from -----------------------------------------------------------


def test_each_value_says_which_source_set_it(tmp_path: Path) -> None:
    path = write(tmp_path / "loomk.toml", 'name = "filed"\n[bus]\nmax_topics = 99\n')
    config = Config.load(
        env={
            "LOOMK_LOG_LEVEL": "error",
            "VLLM_MODEL": "loom-model",
            "VLLM_API_KEY": "sk-secret",
            "REQUEST_TIMEOUT_MS": "",  # empty: unset
        },
        cwd=tmp_path,
        defaults={"shutdown_timeout_s": 1.0},
        state_sync=False,
    )
    assert config.source("name") == ConfigSource("file", str(path))
    assert config.source("bus_max_topics") == ConfigSource("file", str(path))
    assert config.source("log_level") == ConfigSource("env", "LOOMK_LOG_LEVEL")
    assert config.source("llm_model") == ConfigSource("alias", "VLLM_MODEL")
    assert config.source("llm_api_key") == ConfigSource("alias", "VLLM_API_KEY")
    assert config.source("llm_timeout_s") == ConfigSource("default")
    assert config.source("shutdown_timeout_s") == ConfigSource("defaults")
    assert config.source("state_sync") == ConfigSource("keyword")
    assert config.source("data_dir") == ConfigSource("default")
    assert list(config.sources) == [f.name for f in dataclasses.fields(Config)]
    assert str(config.source("name")) == f"file {path}"
    assert str(config.source("log_level")) == "environment variable LOOMK_LOG_LEVEL"
    assert str(config.source("llm_model")) == "environment variable VLLM_MODEL (Loom's name)"
    assert str(config.source("shutdown_timeout_s")) == "the caller's defaults"
    assert str(config.source("state_sync")) == "keyword argument"
    assert str(config.source("data_dir")) == "default"
    assert config.as_dict()["llm_api_key"] == SECRET_MASK  # a source is no reason to show it


def test_a_higher_source_takes_over_the_provenance_too(tmp_path: Path) -> None:
    write(tmp_path / "loomk.toml", 'log_level = "info"\n')
    by_file = Config.load(env={}, cwd=tmp_path)
    by_env = Config.load(env={"LOOMK_LOG_LEVEL": "debug"}, cwd=tmp_path)
    by_kwarg = Config.load(env={"LOOMK_LOG_LEVEL": "debug"}, cwd=tmp_path, log_level="error")
    assert by_file.source("log_level").kind == "file"
    assert by_env.source("log_level").kind == "env"
    assert by_kwarg.source("log_level").kind == "keyword"
    replaced = by_env.replace(name="changed")
    assert replaced.source("name").kind == "keyword"
    assert replaced.source("log_level").kind == "env"  # the rest keep theirs


def test_a_config_built_directly_says_default_or_keyword() -> None:
    config = Config(name="direct")
    assert config.source("name").kind == "keyword"
    assert config.source("log_level").kind == "default"
    with pytest.raises(ConfigError, match="unknown key"):
        config.source("nmae")


def test_sources_survive_pickling(tmp_path: Path) -> None:
    import pickle

    config = Config.load(env={"LOOMK_NAME": "pickled"}, cwd=tmp_path)
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    assert copy.source("name") == ConfigSource("env", "LOOMK_NAME")


# --- a relative data_dir -------------------------------------------------------------------


def test_a_relative_data_dir_in_a_toml_file_is_taken_from_the_files_directory(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write(project / "loomk.toml", 'data_dir = "state"\n')
    assert Config.load(config_file=path, env={}, cwd=elsewhere).data_dir == project / "state"
    named = Config.load(env={"LOOMK_CONFIG": str(path)}, cwd=elsewhere)
    assert named.data_dir == project / "state"
    found = Config.load(env={}, cwd=project)  # the loomk.toml of the working directory
    assert found.data_dir == project / "state"


def test_a_relative_data_dir_from_the_environment_or_a_keyword_is_taken_from_cwd(
    tmp_path: Path,
) -> None:
    write(tmp_path / "loomk.toml", 'data_dir = "from-file"\n')
    assert load_env(tmp_path, LOOMK_DATA_DIR="from-env").data_dir == tmp_path / "from-env"
    keyword = Config.load(env={}, cwd=tmp_path, data_dir="from-kwarg")
    assert keyword.data_dir == tmp_path / "from-kwarg"
    defaults = Config.load(env={}, cwd=tmp_path / "sub", defaults={"data_dir": "d"})
    assert defaults.data_dir == tmp_path / "sub" / "d"  # a caller's default: from cwd too


def test_the_default_data_dir_is_in_the_working_directory(tmp_path: Path) -> None:
    config = Config.load(env={}, cwd=tmp_path)
    assert config.data_dir == tmp_path / ".loomk"
    assert config.source("data_dir").kind == "default"


def test_data_dir_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = Config.load(env={}, cwd=tmp_path, data_dir="~/state")
    assert config.data_dir == tmp_path / "home" / "state"


# --- the bridge's settings -----------------------------------------------------------------


def test_bridge_settings_from_each_source_say_where_they_came_from(tmp_path: Path) -> None:
    path = write(
        tmp_path / "loomk.toml",
        '[bridge]\naddress = "0.0.0.0:50051"\nstream_queue = 64\nheartbeat_timeout_s = 5\n',
    )
    by_file = Config.load(env={}, cwd=tmp_path)
    assert (by_file.bridge_address, by_file.bridge_stream_queue) == ("0.0.0.0:50051", 64)
    assert by_file.bridge_heartbeat_timeout_s == 5.0
    assert by_file.source("bridge_address") == ConfigSource("file", str(path))
    by_env = load_env(tmp_path, LOOMK_BRIDGE_ADDRESS="[::1]:7000", LOOMK_BRIDGE_STREAM_QUEUE="8")
    assert (by_env.bridge_address, by_env.bridge_stream_queue) == ("[::1]:7000", 8)
    assert by_env.source("bridge_address") == ConfigSource("env", "LOOMK_BRIDGE_ADDRESS")
    by_kwarg = Config.load(env={}, cwd=tmp_path, bridge_address=":9000", bridge_max_message_bytes=1)
    assert (by_kwarg.bridge_address, by_kwarg.bridge_max_message_bytes) == (":9000", 1)
    assert by_kwarg.source("bridge_address").kind == "keyword"


def test_loom_s_bridge_variable_sits_below_the_file_and_loomk_s_variable(tmp_path: Path) -> None:
    alias = load_env(tmp_path, LOOM_BRIDGE_ADDR="localhost:50051")
    assert alias.bridge_address == "localhost:50051"
    assert alias.source("bridge_address") == ConfigSource("alias", "LOOM_BRIDGE_ADDR")
    both = load_env(tmp_path, LOOM_BRIDGE_ADDR="loom:1", LOOMK_BRIDGE_ADDRESS="loomk:2")
    assert both.bridge_address == "loomk:2"
    assert load_env(tmp_path, LOOM_BRIDGE_ADDR="").bridge_address == ""  # empty: unset
    write(tmp_path / "loomk.toml", '[bridge]\naddress = "file:3"\n')
    assert load_env(tmp_path, LOOM_BRIDGE_ADDR="loom:1").bridge_address == "file:3"
    with pytest.raises(ConfigError, match="LOOM_BRIDGE_ADDR") as caught:
        load_env(tmp_path, LOOM_BRIDGE_ADDR="no-port")
    assert caught.value.key == "bridge_address"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("localhost:50051", ("localhost", 50051)),
        ("10.0.0.7:0", ("10.0.0.7", 0)),  # 0: the system picks a free port
        ("[::1]:50051", ("::1", 50051)),
        (":50051", ("", 50051)),  # every interface
        ("bridge.example.org:65535", ("bridge.example.org", 65535)),
    ],
)
def test_good_bridge_addresses(tmp_path: Path, address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected
    assert Config.load(env={}, cwd=tmp_path, bridge_address=address).bridge_address == address


@pytest.mark.parametrize(
    "address",
    [
        "50051",
        "host",
        "host:",
        "host:65536",
        "host:-1",
        "::1:50051",
        "[nope]:1",
        "http://h:1",
        "a b:1",
        " h:1",
        "h:\uff15",
    ],
)
def test_bad_bridge_addresses_are_config_errors(tmp_path: Path, address: str) -> None:
    assert split_address(address) is None
    with pytest.raises(ConfigError, match=r"HOST:PORT.*keyword argument") as caught:
        Config.load(env={}, cwd=tmp_path, bridge_address=address)
    assert caught.value.key == "bridge_address"
    with pytest.raises(ConfigError, match="LOOMK_BRIDGE_ADDRESS"):
        load_env(tmp_path, LOOMK_BRIDGE_ADDRESS=address)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bridge_heartbeat_timeout_s", -1.0),
        ("bridge_heartbeat_timeout_s", 0),
        ("bridge_max_message_bytes", 0),
        ("bridge_stream_queue", 0),
        ("bridge_stream_queue", 1.5),
    ],
)
def test_bridge_numbers_out_of_range_are_config_errors(
    tmp_path: Path, key: str, value: object
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(env={}, cwd=tmp_path, **{key: value})
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bridge_link_address", ":50051"),  # a link needs the server's host
        ("bridge_link_name", "two words"),
        ("bridge_link_name", "a.*"),
        ("bridge_link_token", "has space"),
        ("bridge_token", "tab\there"),
    ],
)
def test_bad_bridge_link_settings_are_config_errors(
    tmp_path: Path, key: str, value: object
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(env={}, cwd=tmp_path, **{key: value})
    assert caught.value.key == key


def test_tls_certificate_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bridge_tls_cert is set \(keyword argument\)") as c:
        Config.load(env={}, cwd=tmp_path, bridge_tls_cert="cert.pem")
    assert c.value.key == "bridge_tls_key"
    with pytest.raises(ConfigError, match="LOOMK_BRIDGE_TLS_KEY") as c:
        load_env(tmp_path, LOOMK_BRIDGE_TLS_KEY="key.pem")
    assert c.value.key == "bridge_tls_cert"
    with pytest.raises(ConfigError, match="only over TLS") as c:
        Config.load(env={}, cwd=tmp_path, bridge_tls_client_ca="ca.pem")
    assert c.value.key == "bridge_tls_client_ca"
    tls = Config.load(env={}, cwd=tmp_path, bridge_tls_cert="c.pem", bridge_tls_key="k.pem")
    with pytest.raises(ConfigError, match="bridge_tls_key"):
        tls.replace(bridge_tls_cert="")  # replace checks the pair too


def test_relative_tls_paths_are_taken_like_data_dir(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    path = write(
        project / "loomk.toml",
        '[bridge]\ntls_cert = "tls/cert.pem"\ntls_key = "/abs/key.pem"\ntls_client_ca = "ca.pem"\n',
    )
    config = Config.load(config_file=path, env={}, cwd=tmp_path)
    assert config.bridge_tls_cert == str(project / "tls" / "cert.pem")
    assert config.bridge_tls_key == "/abs/key.pem"
    assert config.bridge_tls_client_ca == str(project / "ca.pem")
    by_env = load_env(tmp_path, LOOMK_BRIDGE_TLS_CERT="c.pem", LOOMK_BRIDGE_TLS_KEY="k.pem")
    assert by_env.bridge_tls_cert == str(tmp_path / "c.pem")  # from the working directory
    assert by_env.bridge_tls_client_ca == ""  # unset stays empty


def test_the_bridge_token_is_never_shown(tmp_path: Path) -> None:
    config = load_env(tmp_path, LOOMK_BRIDGE_TOKEN="tok-very-secret")
    assert config.bridge_token == "tok-very-secret"
    assert "tok-very-secret" not in repr(config)
    assert config.as_dict()["bridge_token"] == SECRET_MASK
    assert config.as_dict(reveal_secrets=True)["bridge_token"] == "tok-very-secret"
    with pytest.raises(ConfigError, match="bridge_token") as caught:
        load_env(tmp_path, LOOMK_BRIDGE_TOKEN="tok with spaces")  # not a header value
    assert "tok with spaces" not in str(caught.value)  # nor is a bad one
