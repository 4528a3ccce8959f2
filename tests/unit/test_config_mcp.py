"""Unit tests for the ``mcp_servers`` setting: Loom's ``[[mcp.servers]]`` from TOML, a JSON
array in ``LOOMK_MCP_SERVERS``, dicts or :class:`McpServerSettings` from code, and the
errors naming the entry and field at fault."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from loomk.config import SECRET_MASK, Config, McpServerSettings, describe
from loomk.errors import ConfigError

TOML = """\
[[mcp.servers]]
name = "time"
command = "mcp-server-time"
args = ["--local-timezone", "UTC"]
env = { TZ_API_KEY = "s3cret" }
cwd = "/tmp"
protocol_version = "2025-06-18"

[[mcp.servers]]
name = "search-2"
url = "https://example.com/mcp"
timeout_s = 5
"""


def load(tmp_path: Path, **kwargs: object) -> Config:
    return Config.load(env={}, cwd=tmp_path, **kwargs)


def test_the_default_is_no_server(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.mcp_servers == ()
    assert config.as_dict()["mcp_servers"] == []


def test_loom_s_array_of_tables_in_loomk_toml(tmp_path: Path) -> None:
    (tmp_path / "loomk.toml").write_text(TOML, encoding="utf-8")
    config = load(tmp_path)
    time, search = config.mcp_servers
    assert time == McpServerSettings(
        name="time",
        command="mcp-server-time",
        args=("--local-timezone", "UTC"),
        env={"TZ_API_KEY": "s3cret"},
        cwd="/tmp",
        protocol_version="2025-06-18",
    )
    assert time.transport == "stdio"
    assert search == McpServerSettings(
        name="search-2", url="https://example.com/mcp", timeout_s=5.0
    )
    assert search.transport == "http"
    assert config.source("mcp_servers").kind == "file"
    hash(config)  # a Config stays hashable


def test_a_json_array_in_the_environment(tmp_path: Path) -> None:
    env = {"LOOMK_MCP_SERVERS": '[{"name": "t", "command": "x", "args": ["-v"]}]'}
    config = Config.load(env=env, cwd=tmp_path)
    assert config.mcp_servers == (McpServerSettings(name="t", command="x", args=("-v",)),)
    assert str(config.source("mcp_servers")) == "environment variable LOOMK_MCP_SERVERS"


def test_dicts_or_settings_from_code(tmp_path: Path) -> None:
    given = McpServerSettings(name="a", command="a-server", env={"K": "v"})
    config = load(tmp_path, mcp_servers=[given, {"name": "b", "url": "http://127.0.0.1:1/mcp"}])
    assert config.mcp_servers[0] == given
    assert config.mcp_servers[1].url == "http://127.0.0.1:1/mcp"
    assert config.replace(mcp_servers=[]).mcp_servers == ()
    assert pickle.loads(pickle.dumps(config)) == config


def test_env_values_are_never_shown(tmp_path: Path) -> None:
    config = load(tmp_path, mcp_servers=[{"name": "a", "command": "x", "env": {"K": "s3cret"}}])
    assert config.as_dict()["mcp_servers"] == [
        {"name": "a", "command": "x", "env": {"K": SECRET_MASK}, "timeout_s": 30.0}
    ]
    assert "s3cret" not in repr(config)
    revealed = config.as_dict(reveal_secrets=True)["mcp_servers"]
    assert revealed == [{"name": "a", "command": "x", "env": {"K": "s3cret"}, "timeout_s": 30.0}]
    assert load(tmp_path, mcp_servers=revealed).mcp_servers == config.mcp_servers


def test_describe_lists_the_setting() -> None:
    (entry,) = [row for row in describe() if row[0] == "mcp_servers"]
    assert entry[1:3] == ("tuple", ())
    assert "[[mcp.servers]]" in entry[3]


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ([{"command": "x"}], "mcp.servers[0].name: missing"),
        ([{"name": "a b", "command": "x"}], "mcp.servers[0].name: expected a name of letters"),
        ([{"name": "a:b", "command": "x"}], "mcp.servers[0].name: expected a name"),
        ([{"name": "a"}], "mcp.servers[0] ('a'): set exactly one of command"),
        (
            [{"name": "a", "command": "x", "url": "http://h/"}],
            "mcp.servers[0] ('a'): set exactly one of command",
        ),
        (
            [{"name": "a", "command": "x"}, {"name": "a", "url": "http://h/"}],
            "mcp.servers[1].name: 'a' is already the name of mcp.servers[0]",
        ),
        ([{"name": "a", "url": "ftp://h/"}], "mcp.servers[0].url: expected an http"),
        ([{"name": "a", "command": 3}], "mcp.servers[0].command: expected a string"),
        ([{"name": "a", "command": "x", "args": "-v"}], "mcp.servers[0].args: expected a list"),
        ([{"name": "a", "command": "x", "args": [1]}], "mcp.servers[0].args[0]: expected a string"),
        ([{"name": "a", "command": "x", "env": ["K"]}], "mcp.servers[0].env: expected a table"),
        ([{"name": "a", "command": "x", "timeout_s": 0}], "mcp.servers[0].timeout_s: expected"),
        ([{"name": "a", "command": "x", "timeout_s": -1.5}], "mcp.servers[0].timeout_s"),
        ([{"name": "a", "command": "x", "timeout_s": True}], "mcp.servers[0].timeout_s"),
        (
            [{"name": "a", "command": "x", "comand": "y"}],
            "mcp.servers[0]: unknown key 'comand' (expected name, command",
        ),
        ([{"name": "a", "command": "x"}, "b"], "mcp.servers[1]: expected a table, got a str"),
        ({"name": "a", "command": "x"}, "mcp.servers: expected an array of tables"),
        ("a", "mcp.servers: expected an array of tables"),
    ],
)
def test_bad_entries_name_the_entry_and_field(
    tmp_path: Path, servers: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=r"'mcp_servers'") as caught:
        load(tmp_path, mcp_servers=servers)
    assert message in str(caught.value)
    assert "keyword argument" in str(caught.value)


def test_a_secret_env_value_of_the_wrong_type_is_not_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, mcp_servers=[{"name": "a", "command": "x", "env": {"K": 12345}}])
    assert "mcp.servers[0].env.K: expected a string" in str(caught.value)
    assert "12345" not in str(caught.value)


def test_a_bad_toml_entry_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "loomk.toml"
    path.write_text('[[mcp.servers]]\nname = "a"\n\n[[mcp.servers]]\nname = "b"\n', "utf-8")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert "mcp.servers[0] ('a'): set exactly one of command" in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_single_table_instead_of_an_array_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "loomk.toml").write_text('[mcp_servers]\nname = "a"\n', "utf-8")
    with pytest.raises(ConfigError, match=r"mcp.servers: expected an array of tables"):
        load(tmp_path)


def test_environment_text_that_is_not_json_is_not_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a JSON array") as caught:
        Config.load(env={"LOOMK_MCP_SERVERS": "name=secret"}, cwd=tmp_path)
    assert "secret" not in str(caught.value)


def test_settings_built_in_code_are_frozen_and_hashable() -> None:
    server = McpServerSettings(name="a", command="x", args=["-v"], env={"K": "v"})  # type: ignore[arg-type]
    assert server.args == ("-v",)
    assert dict(server.env) == {"K": "v"}
    assert hash(server) == hash(
        McpServerSettings(name="a", command="x", args=("-v",), env={"K": "v"})
    )
