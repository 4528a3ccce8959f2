"""Kernel configuration: one typed, frozen :class:`Config` and the rules for loading it.

Every kernel setting lives in :class:`Config`. Build one with :meth:`Config.load`, which
merges four sources, lowest to highest precedence:

1. the field defaults declared on :class:`Config`;
2. a TOML file: ``config_file=`` if given (it must exist), else the path in the
   ``LOOMK_CONFIG`` environment variable if set (it must exist), else ``loomk.toml`` in the
   working directory if there is one. Relative paths are taken relative to ``cwd``. Tables
   flatten with an underscore, so ``[bus]`` / ``realtime_capacity = 64`` sets
   ``bus_realtime_capacity``; a setting whose value is itself a table (``bridge_acl``, see
   :class:`BridgeAcl`) is taken whole: ``[bridge_acl."agent-1"]`` / ``publish = [...]``,
   and so is an array of tables (``[[mcp.servers]]`` sets ``mcp_servers``, see
   :class:`McpServerSettings`);
3. environment variables ``LOOMK_<KEY>`` (``LOOMK_BUS_REALTIME_CAPACITY=128``), whose
   string values are parsed to the field's type (a table setting's as JSON).
   ``LOOMK_CONFIG`` names the file and is not a setting; any other unknown ``LOOMK_*``
   variable is an error;
4. keyword arguments to :meth:`Config.load`.

Where each value came from is kept: :meth:`Config.source` gives a :class:`ConfigSource` per
key (the default, the caller's defaults, the TOML file and its path, the ``LOOMK_*`` variable,
Loom's variable, a keyword argument), and ``loomk config`` shows it.

A relative ``data_dir`` is taken from where it was written: in a TOML file, from that
file's directory (the file and the state it names travel together); from the environment,
a keyword argument or the default ``.loomk``, from the working directory (``cwd``), where
``loomk.toml`` is looked for too. ``~`` is expanded. So ``Config.load`` always gives an
absolute ``data_dir``, which is where the kernel keeps its state (with ``state_temporary``
the kernel uses a temporary directory instead; ``kernel.config.data_dir`` then names it).

The bridge's TLS files (``bridge_tls_cert``, ``bridge_tls_key``, ``bridge_tls_client_ca``)
are resolved the same way when set; they are read when the bridge starts, not here.

Loom's variable names ``VLLM_BASE_URL``, ``VLLM_MODEL``, ``VLLM_API_KEY``,
``VLLM_TEMPERATURE``, ``REQUEST_TIMEOUT_MS`` (milliseconds) and ``LOOM_BRIDGE_ADDR`` are
read too, below the TOML file and the ``LOOMK_*`` equivalents (a leftover shell variable
must not pair a key with a file's endpoint); empty ones count as unset.

Every value from every source is checked for type and range when it is loaded, and an unknown
key or bad value raises :class:`~loomk.errors.ConfigError` naming the key, where the value
came from, what was expected and what was given (a secret's value is never shown). Settings
that go together are checked once merged (the bridge's TLS certificate and key are set both
or neither). :meth:`Config.replace` applies the same checks. :func:`describe` lists every
setting with its type, default and documentation.
"""

from __future__ import annotations

import dataclasses
import difflib
import hmac
import ipaddress
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from loomk.errors import ConfigError

__all__ = [
    "ACL_ANY_AGENT",
    "ACL_LISTS",
    "SECRET_MASK",
    "BridgeAcl",
    "BridgeAclEntry",
    "Config",
    "ConfigSource",
    "McpServerSettings",
    "McpServers",
    "SourceKind",
    "describe",
    "mcp_server_name_problem",
    "mcp_servers_from",
    "parse_log_levels",
    "split_address",
]

SECRET_MASK = "********"

_ENV_PREFIX = "LOOMK_"
_ENV_CONFIG = "LOOMK_CONFIG"
_FILE_NAME = "loomk.toml"
_KWARG_SOURCE = "from keyword argument"
_BOOL_WORDS: dict[str, bool] = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


SourceKind = Literal["default", "defaults", "alias", "file", "env", "keyword", "kernel"]
"""Kinds of :class:`ConfigSource`, lowest precedence first (``kernel``: set by a running
kernel, as the temporary ``data_dir`` of ``state_temporary``)."""


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where one setting's value came from; ``str()`` says it for people."""

    kind: SourceKind
    name: str = ""
    """The TOML file's path (``file``), the variable's name (``env``, ``alias``), or what
    the kernel set the value for (``kernel``); empty otherwise."""

    def __str__(self) -> str:
        if self.kind == "file":
            return f"file {self.name}"
        if self.kind == "env":
            return f"environment variable {self.name}"
        if self.kind == "alias":
            return f"environment variable {self.name} (Loom's name)"
        if self.kind == "kernel":
            return f"the kernel ({self.name})" if self.name else "the kernel"
        return {"default": "default", "defaults": "the caller's defaults"}.get(
            self.kind, "keyword argument"
        )


_DEFAULT_SOURCE = ConfigSource("default")
_KEYWORD_SOURCE = ConfigSource("keyword")


# --- the bridge's access control list (bridge_acl) -------------------------------------------

ACL_ANY_AGENT = "*"
"""The ``bridge_acl`` entry for every agent without one of its own."""

ACL_LISTS: tuple[str, ...] = ("publish", "subscribe", "call", "offer")
"""The lists of a ``bridge_acl`` entry, one per action the bridge checks."""

# The bus's topic grammar (loomk.bus.topics), repeated here because the configuration sits
# below the bus; a property test keeps the two in agreement.
_ACL_TOPIC_TOKEN = r"[^ \t\r\n\v\f\x00\ud800-\udfff.*>]+"
_ACL_TOPIC_PATTERN = re.compile(
    rf"(?:{_ACL_TOPIC_TOKEN}|\*)(?:\.(?:{_ACL_TOPIC_TOKEN}|\*))*(?:\.>)?|>"
)
_ACL_TOPIC_MAX = 1024
# Capability names (loomk.actions' rule) with whole-token '*' and a final '>' added; ':'
# belongs to a token (an MCP tool "server:tool" is one token).
_ACL_NAME_TOKEN = r"[A-Za-z0-9_][A-Za-z0-9_\-]*(?::[A-Za-z0-9_][A-Za-z0-9_\-]*)*"
_ACL_NAME_PATTERN = re.compile(
    rf"(?:{_ACL_NAME_TOKEN}|\*)(?:\.(?:{_ACL_NAME_TOKEN}|\*))*(?:\.>)?|>", re.ASCII
)
# loomk.agents' agent id rule
_ACL_AGENT_ID = re.compile(r"[A-Za-z0-9_\-:]+(?:\.[A-Za-z0-9_\-:]+)*", re.ASCII)
_ACL_AGENT_ID_MAX = 200


def _token_shaped(value: str) -> bool:
    """A bearer token: printable ASCII without spaces (what an HTTP/2 header carries)."""
    return all(33 <= ord(ch) <= 126 for ch in value)


_NATS_URL = re.compile(r"(nats|tls|ws|wss)://([^\s/@]+@)?[^\s/@:]+(:\d+)?/?")
_NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _bearer_token_setting(doc: str) -> Any:
    """A secret bearer-token setting: empty by default, never shown (``repr``, ``loomk
    config``) and shaped like a token."""
    return field(
        default="",
        repr=False,
        metadata={
            "doc": doc,
            "secret": True,
            "shape": _token_shaped,
            "expected": "printable ASCII without spaces, or empty",
        },
    )


# a token of a capability name (loomk.actions' rule): it prefixes the server's capabilities
_MCP_SERVER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*", re.ASCII)
_MCP_SERVER_NAME_MAX = 64


def mcp_server_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name an MCP server, or None when it can: letters, digits, ``_``
    and ``-`` (not first), at most 64 characters. The one rule for :meth:`McpServerSettings.
    from_table` and for settings made in code (``loomk.mcp`` checks those before connecting),
    since the name prefixes the server's capabilities (``name:tool``)."""
    if (
        isinstance(name, str)
        and len(name) <= _MCP_SERVER_NAME_MAX
        and _MCP_SERVER_NAME.fullmatch(name) is not None
    ):
        return None
    return (
        f"expected a name of letters, digits, '_' and '-' (not first; at most "
        f"{_MCP_SERVER_NAME_MAX}; it prefixes the server's capabilities, 'name:tool'), "
        f"got {name!r}"
    )


_MCP_SERVER_KEYS: tuple[str, ...] = (
    "name",
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "protocol_version",
    "timeout_s",
)
_MCP_SERVER_STRINGS = frozenset({"command", "cwd", "url", "protocol_version"})


class _FrozenEnv(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping: the ``env`` of a
    :class:`McpServerSettings`, so a :class:`Config` holding it stays hashable."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: Mapping[str, str] = MappingProxyType(dict(items or {}))

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self._items) == dict(other)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __reduce__(self) -> tuple[type[_FrozenEnv], tuple[dict[str, str]]]:
        return _FrozenEnv, (dict(self._items),)

    def __repr__(self) -> str:
        return repr(dict(self._items))


@dataclass(frozen=True, slots=True)
class McpServerSettings:
    """One MCP server the kernel uses (Loom's ``[[mcp.servers]]`` entry, plus ``url`` and
    ``timeout_s``): started as ``command`` with ``args`` (``env`` added to the inherited
    environment, in ``cwd``) and spoken to over stdio, or reached at ``url`` over
    Streamable HTTP (exactly one of the two). ``protocol_version`` empty: the newest both
    sides speak. ``timeout_s`` bounds each request to it.

    ``name`` prefixes the server's capabilities (``name:tool``), so it is a token of
    letters, digits, ``_`` and ``-``. Immutable and hashable like every value of a
    :class:`Config` (``args`` is kept as a tuple, ``env`` as a read-only mapping). ``env``
    often carries API keys: it is left out of ``repr`` and masked by ``loomk config``.
    Build one from its TOML shape with :meth:`from_table`, which checks every field.
    """

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: str = ""
    url: str = ""
    protocol_version: str = ""
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        # a list or dict given in code is frozen, so the settings stay hashable
        if not isinstance(self.args, tuple):
            object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.env, _FrozenEnv):
            object.__setattr__(self, "env", _FrozenEnv(self.env))

    @property
    def transport(self) -> str:
        """``"stdio"`` (a ``command`` to start) or ``"http"`` (a ``url`` to reach)."""
        return "http" if self.url else "stdio"

    @classmethod
    def from_table(cls, table: object, where: str = "mcp.servers[0]") -> McpServerSettings:
        """Check and convert one ``[[mcp.servers]]`` table (or a settings object, kept).

        Raises :class:`ValueError` starting with ``where`` and the field at fault
        (``mcp.servers[1].command: ...``); an ``env`` value is never shown.
        """
        if isinstance(table, McpServerSettings):
            table = table.as_table(reveal_secrets=True)
        if not isinstance(table, Mapping):
            raise ValueError(f"{where}: expected a table, got a {type(table).__name__}")
        fields: dict[str, Any] = {}
        for key, value in table.items():
            if key not in _MCP_SERVER_KEYS:
                close = difflib.get_close_matches(str(key), _MCP_SERVER_KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"{where}: unknown key {key!r} (expected {', '.join(_MCP_SERVER_KEYS)}){hint}"
                )
            fields[key] = _mcp_field(f"{where}.{key}", key, value)
        if "name" not in fields:
            raise ValueError(f"{where}.name: missing (each server needs a name)")
        if bool(fields.get("command")) == bool(fields.get("url")):
            given = "both" if fields.get("command") else "neither"
            raise ValueError(
                f"{where} ({fields['name']!r}): set exactly one of command (a program spoken "
                f"to over stdio) and url (a Streamable HTTP endpoint), got {given}"
            )
        return cls(**fields)

    def as_table(self, *, reveal_secrets: bool = False) -> dict[str, object]:
        """The TOML shape (``env`` values masked unless ``reveal_secrets``); round-trips
        through :meth:`from_table` when revealed. Empty optional fields are left out."""
        table: dict[str, object] = {"name": self.name}
        for key in _MCP_SERVER_KEYS[1:]:
            value = getattr(self, key)
            if key == "timeout_s" or value:
                if key == "args":
                    value = list(value)
                elif key == "env":
                    value = {k: v if reveal_secrets else SECRET_MASK for k, v in value.items()}
                table[key] = value
        return table


def _mcp_field(where: str, key: str, value: object) -> object:
    """One checked field of an ``[[mcp.servers]]`` table (see :class:`McpServerSettings`)."""
    if key == "name":
        problem = mcp_server_name_problem(value)
        if problem is not None:
            raise ValueError(f"{where}: {problem}")
        return value
    if key in _MCP_SERVER_STRINGS:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r} ({type(value).__name__})")
        if key == "url" and value and not re.match(r"https?://[^/\s]+", value, re.IGNORECASE):
            raise ValueError(f"{where}: expected an http:// or https:// URL, got {value!r}")
        return value
    if key == "args":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list of strings, got {value!r}")
        for index, arg in enumerate(value):
            if not isinstance(arg, str):
                raise ValueError(
                    f"{where}[{index}]: expected a string, got {arg!r} ({type(arg).__name__})"
                )
        return tuple(value)
    if key == "env":
        if not isinstance(value, Mapping):
            raise ValueError(
                f"{where}: expected a table of name -> string, got a {type(value).__name__}"
            )
        for name, text in value.items():
            if not isinstance(name, str) or not name or "=" in name:
                raise ValueError(f"{where}: {name!r} is not an environment variable name")
            if not isinstance(text, str):  # the value is not shown: it may be a secret
                raise ValueError(
                    f"{where}.{name}: expected a string, got a value of type "
                    f"{type(text).__name__} (not shown)"
                )
        return _FrozenEnv(value)
    # timeout_s
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(typing.cast(float, value)) or typing.cast(float, value) <= 0:
        raise ValueError(f"{where}: expected a finite number of seconds > 0, got {value!r}")
    return float(typing.cast(float, value))


McpServers = tuple[McpServerSettings, ...]
"""The type of the ``mcp_servers`` setting."""


def mcp_servers_from(value: object) -> McpServers:
    """Check and convert the ``mcp_servers`` setting: a list of ``[[mcp.servers]]`` tables
    (or :class:`McpServerSettings`), names unique. Raises :class:`ValueError` naming the
    entry and field (``mcp.servers[1].command: ...``)."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        raise ValueError(
            f"mcp.servers: expected an array of tables ([[mcp.servers]] in TOML, a JSON "
            f"array in LOOMK_MCP_SERVERS), got a {type(value).__name__}"
        )
    servers: list[McpServerSettings] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(value):
        server = McpServerSettings.from_table(raw, f"mcp.servers[{index}]")
        if server.name in seen:
            raise ValueError(
                f"mcp.servers[{index}].name: {server.name!r} is already the name of "
                f"mcp.servers[{seen[server.name]}] (names must be unique)"
            )
        seen[server.name] = index
        servers.append(server)
    return tuple(servers)


@dataclass(frozen=True, slots=True)
class BridgeAclEntry:
    """What one remote agent may do through the bridge: one entry of ``bridge_acl``.

    Each list holds patterns in the bus's grammar (``*`` one token, ``>`` one or more
    trailing tokens): ``publish`` the topics it may publish on, ``subscribe`` what its
    subscriptions may cover (a requested pattern must be covered entirely), ``call`` the
    capabilities it may call with ``ForwardAction``, ``offer`` those it may register. An
    empty or missing list allows nothing. ``token``, when set, binds the agent id to that
    bearer token: a call claiming the id must carry it (it is never shown).
    """

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    call: tuple[str, ...] = ()
    offer: tuple[str, ...] = ()
    token: str = field(default="", repr=False)

    def as_table(self, *, reveal_secrets: bool = False) -> dict[str, object]:
        """The entry as its TOML table (lists as lists; the token masked unless asked)."""
        table: dict[str, object] = {name: list(getattr(self, name)) for name in ACL_LISTS}
        if self.token:
            table["token"] = self.token if reveal_secrets else SECRET_MASK
        return table


class BridgeAcl(Mapping[str, BridgeAclEntry]):
    """The value of ``bridge_acl``: agent id (or ``"*"``) -> :class:`BridgeAclEntry`.

    Empty means no access control (everything allowed, as without the setting). Otherwise
    an agent gets its own entry, else the ``"*"`` entry, else nothing at all
    (:meth:`entry_for`). Immutable and hashable, like every value of a :class:`Config`.
    Build one from its TOML shape with :meth:`from_table`.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, BridgeAclEntry] | None = None) -> None:
        self._entries: Mapping[str, BridgeAclEntry] = MappingProxyType(dict(entries or {}))

    @classmethod
    def from_table(cls, table: object) -> BridgeAcl:
        """Check and convert the TOML shape: ``{agent: {publish: [...], ..., token: "..."}}``.

        Raises :class:`ValueError` saying which entry and item is wrong (never showing a
        token); :class:`Config` turns it into a :class:`~loomk.errors.ConfigError`.
        """
        if isinstance(table, BridgeAcl):
            return table
        if not isinstance(table, Mapping):
            raise ValueError(f"expected a table of agent id -> entry, got a {type(table).__name__}")
        entries: dict[str, BridgeAclEntry] = {}
        for agent, raw in table.items():
            entries[_acl_agent(agent)] = _acl_entry(agent, raw)
        tokens: dict[str, str] = {}
        for agent, entry in entries.items():
            if entry.token in tokens:
                raise ValueError(
                    f"entries {tokens[entry.token]!r} and {agent!r} have the same token: "
                    "each token binds one agent id"
                )
            if entry.token:
                tokens[entry.token] = agent
        return cls(entries)

    def entry_for(self, agent_id: str) -> BridgeAclEntry | None:
        """The entry that governs ``agent_id``: its own, else ``"*"``'s, else None (denied
        everything). Only meaningful when the ACL is not empty."""
        entry = self._entries.get(agent_id)
        return entry if entry is not None else self._entries.get(ACL_ANY_AGENT)

    def as_table(self, *, reveal_secrets: bool = False) -> dict[str, object]:
        """The TOML shape, tokens masked unless ``reveal_secrets`` (round-trips through
        :meth:`from_table` when revealed)."""
        return {
            agent: entry.as_table(reveal_secrets=reveal_secrets)
            for agent, entry in self._entries.items()
        }

    def __getitem__(self, agent: str) -> BridgeAclEntry:
        return self._entries[agent]

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BridgeAcl):
            return NotImplemented
        return dict(self._entries) == dict(other._entries)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._entries.items(), key=lambda item: item[0])))

    def __reduce__(self) -> tuple[type[BridgeAcl], tuple[dict[str, BridgeAclEntry]]]:
        return BridgeAcl, (dict(self._entries),)

    def __repr__(self) -> str:
        return f"BridgeAcl({self.as_table()!r})"

    def __str__(self) -> str:
        return str(self.as_table())


def _acl_agent(agent: object) -> str:
    if agent == ACL_ANY_AGENT:
        return ACL_ANY_AGENT
    if (
        not isinstance(agent, str)
        or len(agent) > _ACL_AGENT_ID_MAX
        or _ACL_AGENT_ID.fullmatch(agent) is None
    ):
        raise ValueError(
            f"entry {agent!r}: not an agent id (letters, digits, '_', '-', ':' and dots "
            "between non-empty parts) nor '*' (every agent without an entry)"
        )
    return agent


def _acl_entry(agent: str, raw: object) -> BridgeAclEntry:
    where = f"entry {agent!r}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a table, got a {type(raw).__name__}")
    known = (*ACL_LISTS, "token")
    lists: dict[str, tuple[str, ...]] = {}
    token = ""
    for name, value in raw.items():
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}: unknown key {name!r} (expected {', '.join(known)}){hint}")
        if name == "token":
            token = _acl_token(where, agent, value)
        else:
            lists[name] = _acl_patterns(f"{where}, {name}", value, topics=name in _ACL_TOPICS)
    return BridgeAclEntry(**lists, token=token)


_ACL_TOPICS = frozenset({"publish", "subscribe"})


def _acl_token(where: str, agent: str, value: object) -> str:
    if agent == ACL_ANY_AGENT:
        raise ValueError(
            f"{where}: a token binds one agent id and '*' names none (bridge_token is the "
            "token of every agent without its own)"
        )
    if not isinstance(value, str) or not value or not _token_shaped(value):
        raise ValueError(
            f"{where}, token: expected printable ASCII without spaces, got a "
            f"{type(value).__name__} not shown (secret)"
        )
    return value


def _acl_patterns(where: str, value: object, *, topics: bool) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"{where}: expected a list of patterns, got {value!r}")
    grammar = _ACL_TOPIC_PATTERN if topics else _ACL_NAME_PATTERN
    patterns: list[str] = []
    for index, pattern in enumerate(value):
        ok = (
            isinstance(pattern, str)
            and len(pattern) <= _ACL_TOPIC_MAX
            and grammar.fullmatch(pattern) is not None
        )
        if not ok:
            what = "topic pattern" if topics else "capability name or pattern"
            raise ValueError(
                f"{where}[{index}]: {pattern!r} is not a {what} (dot-separated tokens; '*' "
                "stands for one whole token, '>' for the remaining ones and comes last)"
            )
        patterns.append(pattern)
    return tuple(dict.fromkeys(patterns))


class _Sourced:
    """A slot for where each value of a :class:`Config` came from, kept outside its fields
    (``dataclasses.fields(Config)`` stays exactly the settings)."""

    __slots__ = ("_sources",)
    _sources: Mapping[str, ConfigSource]


@dataclass(frozen=True, slots=True)
class Config(_Sourced):
    """Every kernel setting, validated. Build with :meth:`load`, change with :meth:`replace`.

    :meth:`source` says where each value came from. A relative ``data_dir`` is taken from
    the directory of the TOML file that sets it, and otherwise from the working directory
    (``Config.load`` resolves it; the kernel resolves one left relative in a ``Config`` it
    is given, against the working directory when it opens).
    """

    name: str = field(
        default="loomk",
        metadata={"doc": "Kernel name, shown in logs and the dashboard.", "token": True},
    )
    data_dir: Path = field(
        default=Path(".loomk"),
        metadata={
            "doc": "Directory of the persistent state (LevelDB), locked while a kernel uses "
            "it; a relative path is taken from the directory of the TOML file that sets it, "
            "otherwise from the working directory.",
        },
    )
    state_sync: bool = field(
        default=True,
        metadata={"doc": "fsync every state commit (group-committed) before acknowledging it."},
    )
    state_temporary: bool = field(
        default=False,
        metadata={
            "doc": "Keep state in a temporary directory, deleted when the kernel stops "
            "(data_dir is then not used).",
        },
    )
    state_fault: str = field(
        default="stop",
        metadata={
            "doc": "What a fault of the store met while running (unreadable, damaged, a "
            "failed write) does: 'stop' stops the kernel, and run/open_kernel raise the "
            "StoreError; 'agent' fails only the handler that met it (its agent restarts as "
            "its policy says) and the kernel goes on.",
            "choices": ("stop", "agent"),
        },
    )
    memory_max_items: int = field(
        default=256,
        metadata={"doc": "How many items an agent's ephemeral memory keeps.", "min": 1},
    )
    memory_max_bytes: int = field(
        default=262144,
        metadata={"doc": "How many bytes an agent's ephemeral memory keeps.", "min": 1},
    )
    log_level: str = field(
        default="warning",
        metadata={
            "doc": "Minimum level of log records emitted.",
            "choices": ("debug", "info", "warning", "error", "critical"),
        },
    )
    log_format: str = field(
        default="console",
        metadata={"doc": "Log output format.", "choices": ("console", "json")},
    )
    log_levels: str = field(
        default="",
        metadata={
            "doc": "Levels of single loggers, overriding log_level for them and the loggers "
            "below them: 'loomk.bridge=debug,loomk.bus=error'; empty: log_level for all.",
            "shape": lambda value: _log_levels_shape(value),
            "expected": "comma-separated LOGGER=LEVEL pairs (levels debug, info, warning, "
            "error, critical), or empty",
        },
    )
    log_mask_fields: str = field(
        default="",
        metadata={
            "doc": "Comma-separated names of log fields whose values are masked, beside "
            "those always masked (api_key, authorization, password, secret, token...).",
            "shape": lambda value: all(name.strip() for name in value.split(",")) or not value,
            "expected": "comma-separated field names, or empty",
        },
    )
    tracing: bool = field(
        default=False,
        metadata={
            "doc": "Record OpenTelemetry spans of publish -> deliver -> handle -> invoke "
            "through the global tracer provider (needs loomk[otel]).",
        },
    )
    builtin_capabilities: bool = field(
        default=True,
        metadata={"doc": "Register time.now, math.eval, weather.get and web.search at start."},
    )
    action_timeout_s: float = field(
        default=30.0,
        metadata={"doc": "Default timeout of a capability call without its own.", "min": 0.001},
    )
    llm_base_url: str = field(
        default="",
        metadata={
            "doc": "OpenAI-compatible endpoint (ending in /v1); empty: the built-in local "
            "model answers llm.generate (also read from VLLM_BASE_URL).",
        },
    )
    llm_model: str = field(
        default="qwen2.5-0.5b-instruct",
        metadata={"doc": "Model name sent to the endpoint (also VLLM_MODEL)."},
    )
    llm_api_key: str = field(
        default="",
        repr=False,
        metadata={
            "doc": "Bearer token for the endpoint (also VLLM_API_KEY); never shown or logged.",
            "secret": True,
        },
    )
    llm_timeout_s: float = field(
        default=30.0,
        metadata={
            "doc": "Timeout of one model request (also REQUEST_TIMEOUT_MS, in ms).",
            "gt": 0.0,
        },
    )
    llm_temperature: float = field(
        default=0.7,
        metadata={"doc": "Sampling temperature (also VLLM_TEMPERATURE).", "min": 0.0},
    )
    llm_max_retries: int = field(
        default=3,
        metadata={
            "doc": "Retries of a model request after a connect error, a 429 or a 5xx.",
            "min": 0,
        },
    )
    bus_realtime_capacity: int = field(
        default=64,
        metadata={"doc": "Default queue capacity of realtime subscriptions.", "min": 1},
    )
    bus_batched_capacity: int = field(
        default=1024,
        metadata={"doc": "Default queue capacity of batched subscriptions.", "min": 1},
    )
    bus_background_capacity: int = field(
        default=4096,
        metadata={"doc": "Default queue capacity of background subscriptions.", "min": 1},
    )
    bus_max_topics: int = field(
        default=10000,
        metadata={
            "doc": "How many topics the bus keeps routes and statistics for "
            "before pruning idle ones.",
            "min": 16,
        },
    )
    shutdown_timeout_s: float = field(
        default=5.0,
        metadata={"doc": "Seconds graceful shutdown waits for agents to drain.", "gt": 0.0},
    )
    agent_start_timeout_s: float = field(
        default=30.0,
        metadata={
            "doc": "Seconds an agent's first on_start may take before spawn gives up on it "
            "with AgentStartError (spawn's start_timeout_s overrides it).",
            "gt": 0.0,
        },
    )
    stall_warning_ms: int = field(
        default=200,
        metadata={
            "doc": "Warn (once per stall, naming the agent and its stack) when the kernel's "
            "thread has not come back to the scheduler for this long; 0 turns it off.",
            "min": 0,
        },
    )
    handle_signals: bool = field(
        default=False,
        metadata={
            "doc": "Install SIGINT/SIGTERM handlers that shut the kernel down gracefully "
            "(loomk.run turns it on).",
        },
    )
    bridge_address: str = field(
        default="",
        metadata={
            "doc": "HOST:PORT the gRPC bridge listens on (IPv6 in brackets, [::1]:50051; "
            "a bare :PORT listens on every interface; port 0 picks a free one); empty: no "
            "bridge (also read from LOOM_BRIDGE_ADDR). Setting it starts the bridge edge.",
            "shape": lambda value: not value or split_address(value) is not None,
            "expected": "HOST:PORT, [IPV6]:PORT or :PORT with a port 0..65535, or empty",
        },
    )
    dashboard_address: str = field(
        default="",
        metadata={
            "doc": "HOST:PORT the web dashboard listens on (page, websocket feed /ws and "
            "Prometheus /metrics on one port; port 0 picks a free one); empty: no dashboard "
            "(also LOOMK_DASHBOARD_ADDRESS). Setting it starts the dashboard edge "
            "(needs loomk[dashboard]).",
            "shape": lambda value: not value or split_address(value) is not None,
            "expected": "HOST:PORT, [IPV6]:PORT or :PORT with a port 0..65535, or empty",
        },
    )
    dashboard_max_clients: int = field(
        default=100,
        metadata={
            "doc": "Most websocket clients the dashboard feeds at once; more are turned "
            "away (close code 1013, try again later).",
            "min": 1,
        },
    )
    dashboard_allowed_hosts: str = field(
        default="",
        metadata={
            "doc": "Comma-separated host names the dashboard also answers to (the Host a "
            "proxy forwards, 'dash.example.com'); a dashboard bound to a loopback address "
            "otherwise answers only to loopback names, so that a page of another site "
            "cannot reach it by DNS rebinding.",
            "shape": lambda value: (
                not value
                or all(part.strip() and " " not in part.strip() for part in value.split(","))
            ),
            "expected": "comma-separated host names, or empty",
        },
    )
    bridge_link_address: str = field(
        default="",
        metadata={
            "doc": "HOST:PORT of a bridge server this kernel links to, so that its agents "
            "join that server's bus (loomk_bridge.connect); empty: no link. Setting it "
            "starts the bridge_link edge.",
            "shape": lambda value: not value or bool((split_address(value) or ("",))[0]),
            "expected": "HOST:PORT or [IPV6]:PORT of the server, or empty",
        },
    )
    bridge_link_name: str = field(
        default="",
        metadata={
            "doc": "This kernel's name on the bridge server it links to (its agent id "
            "there); empty: link-<host>-<pid>.",
            "shape": lambda value: not value or _ACL_AGENT_ID.fullmatch(value) is not None,
            "expected": "an agent id (letters, digits, '_', '-', ':' and inner dots), or empty",
        },
    )
    bridge_link_token: str = _bearer_token_setting(
        "Bearer token this kernel's link presents to the server it links to; "
        "empty: none; never shown or logged."
    )
    bridge_token: str = _bearer_token_setting(
        "Bearer token every bridge client must send (metadata 'authorization: "
        "Bearer TOKEN'); empty: no token asked; never shown or logged."
    )
    bridge_tls_cert: str = field(
        default="",
        metadata={
            "doc": "PEM certificate (chain) the bridge serves TLS with; set with "
            "bridge_tls_key, or neither (plaintext). A relative path is taken like data_dir's.",
            "path": True,
        },
    )
    bridge_tls_key: str = field(
        default="",
        metadata={
            "doc": "PEM private key of bridge_tls_cert; set both or neither.",
            "path": True,
        },
    )
    bridge_tls_client_ca: str = field(
        default="",
        metadata={
            "doc": "PEM CA bundle: when set, bridge clients must present a certificate it "
            "signed (mutual TLS; needs bridge_tls_cert and bridge_tls_key).",
            "path": True,
        },
    )
    bridge_heartbeat_timeout_s: float = field(
        default=45.0,
        metadata={
            "doc": "Seconds a remote agent may stay silent on the bridge before it is dropped.",
            "gt": 0.0,
        },
    )
    bridge_max_message_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata={"doc": "Largest gRPC message the bridge sends or accepts, in bytes.", "min": 1},
    )
    bridge_stream_queue: int = field(
        default=512,
        metadata={
            "doc": "Outbound frames buffered per bridge stream (Loom buffers 512).",
            "min": 1,
        },
    )
    bridge_max_payload_bytes: int = field(
        default=1024 * 1024,
        metadata={
            "doc": "Largest event payload a bridge client may publish, in bytes; a larger "
            "one is refused with an err frame PAYLOAD_TOO_LARGE and the stream goes on.",
            "min": 1,
        },
    )
    bridge_max_registration_items: int = field(
        default=1024,
        metadata={
            "doc": "Most topics, capabilities and metadata entries (each) one RegisterAgent "
            "may carry; a larger registration is refused.",
            "min": 1,
        },
    )
    bridge_acl: BridgeAcl = field(
        default=BridgeAcl(),
        metadata={
            "doc": "Per-agent access control of the bridge: agent id (or '*', every agent "
            "without an entry) -> lists publish, subscribe, call, offer of patterns and an "
            "optional token binding the id; empty: everything allowed. In loomk.toml, "
            '[bridge_acl."agent-1"] publish = ["sensor.>"]; in LOOMK_BRIDGE_ACL, JSON.',
            "table": True,
            "expected": "a table of agent id (or '*') -> {publish, subscribe, call, offer: "
            "lists of patterns; token: a string}",
        },
    )
    mcp_servers: McpServers = field(
        default=(),
        metadata={
            "doc": "MCP servers whose tools, resources and prompts become capabilities "
            "('server:tool'), each {name, command, args, env, cwd} (stdio) or {name, url} "
            "(Streamable HTTP), plus protocol_version and timeout_s; empty: no MCP. In "
            'loomk.toml, [[mcp.servers]] name = "time" command = "mcp-server-time"; in '
            "LOOMK_MCP_SERVERS, a JSON array. See docs/mcp.md.",
            "table": True,
            "expected": "an array of tables {name, command or url, args, env, cwd, "
            "protocol_version, timeout_s}",
        },
    )
    cluster_nats_url: str = field(
        default="",
        repr=False,
        metadata={
            "doc": "NATS server(s) this kernel shares its bus through with other kernels "
            "('nats://host:4222', comma-separated for a NATS cluster); empty: no cluster. "
            "Setting it starts the cluster edge (loomk[cluster]). See docs/cluster.md.",
            "secret": True,  # a URL may carry a user and password
            "shape": lambda value: (
                not value or all(_NATS_URL.fullmatch(url.strip()) for url in value.split(","))
            ),
            "expected": "comma-separated nats://HOST:PORT URLs (tls://, ws:// too), or empty",
        },
    )
    cluster_share: str = field(
        default=">",
        metadata={
            "doc": "Topic patterns this kernel shares with the cluster, each with the QoS "
            "it travels with: 'sensor.>=realtime, order.*=batched'. realtime (the default "
            "when none is given) rides core NATS, at most once; batched and background "
            "ride JetStream, a stream per pattern, acknowledged once handled here.",
            "shape": lambda value: _cluster_share_problem(value) == "",
            "expected": "comma-separated PATTERN or PATTERN=QOS (realtime, batched, "
            "background), batched patterns not overlapping",
        },
    )
    cluster_node: str = field(
        default="",
        metadata={
            "doc": "This kernel's name in the cluster, unique among its kernels and kept "
            "across restarts (its JetStream consumers are named after it); empty: one made "
            "once ('k-' and 12 hex digits) and kept in the data directory.",
            "shape": lambda value: not value or _NODE_NAME.fullmatch(value) is not None,
            "expected": "letters, digits, '-' and '_' (at most 64), or empty",
        },
    )
    cluster_subject_prefix: str = field(
        default="loomk",
        metadata={
            "doc": "The NATS subject token put before every topic ('loomk.sensor.temp'), "
            "so loomk's traffic is kept apart from anything else on the server.",
            "shape": lambda value: _NODE_NAME.fullmatch(value) is not None,
            "expected": "one subject token: letters, digits, '-' and '_'",
        },
    )
    cluster_ack_wait_s: float = field(
        default=30.0,
        metadata={
            "doc": "How long JetStream waits for this kernel to acknowledge a batched event "
            "before sending it again (after a crash, the wait before redelivery).",
            "min": 0.5,
        },
    )

    @classmethod
    def load(
        cls,
        *,
        config_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        defaults: Mapping[str, object] | None = None,
        **overrides: object,
    ) -> Config:
        """Merge defaults < TOML file < ``LOOMK_*`` environment < ``overrides`` and validate.

        ``env`` defaults to ``os.environ`` and ``cwd`` to the current directory; both exist
        so callers (and tests) can load without touching process state. ``defaults`` replace
        field defaults, below every source (as a test kit's own defaults should be).
        """
        environ: Mapping[str, str] = os.environ if env is None else env
        base = (Path.cwd() if cwd is None else Path(cwd)).absolute()
        values: dict[str, object] = {}
        sources: dict[str, ConfigSource] = dict.fromkeys(_FIELDS, _DEFAULT_SOURCE)

        def take(found: dict[str, object], source: typing.Callable[[str], ConfigSource]) -> None:
            values.update(found)
            sources.update({key: source(key) for key in found})

        take(_from_kwargs(defaults or {}, "from the caller's defaults"), _sourced("defaults"))
        take(_from_aliases(environ), lambda key: ConfigSource("alias", _ALIAS_OF[key]))
        path = _find_file(config_file, environ, base)
        if path is not None:
            take(_from_file(path), _sourced("file", str(path)))
        take(_from_env(environ), lambda key: ConfigSource("env", _ENV_PREFIX + key.upper()))
        take(_from_kwargs(overrides), _sourced("keyword"))
        values["data_dir"] = _absolute_path(
            values.get("data_dir", _FIELDS["data_dir"].default), sources["data_dir"], base
        )
        for key in _PATH_STRINGS:
            if values.get(key):
                values[key] = str(_absolute_path(values[key], sources[key], base))
        return _check_together(cls(**values)._sourced_from(sources))  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Config:
        """Return a copy with ``changes`` applied, validated like keyword overrides to load."""
        return self.replace_from(_KEYWORD_SOURCE, **changes)

    def replace_from(self, source: ConfigSource, /, **changes: object) -> Config:
        """:meth:`replace`, recording ``source`` as where the changed values came from."""
        checked = _from_kwargs(changes)
        changed = dataclasses.replace(self, **checked)  # type: ignore[arg-type]
        sources = {**self.sources, **dict.fromkeys(checked, source)}
        return _check_together(changed._sourced_from(sources))

    def source(self, key: str) -> ConfigSource:
        """Where the value of ``key`` came from (see :class:`ConfigSource`)."""
        if key not in _FIELDS:
            raise ConfigError(key, f"unknown key{_suggest(key, _FIELDS)}")
        recorded: Mapping[str, ConfigSource] = getattr(self, "_sources", {})
        if key in recorded:
            return recorded[key]
        # built directly with Config(...): its own arguments, or the defaults
        return _DEFAULT_SOURCE if getattr(self, key) == _FIELDS[key].default else _KEYWORD_SOURCE

    @property
    def sources(self) -> Mapping[str, ConfigSource]:
        """:meth:`source` of every setting, in field order."""
        return MappingProxyType({key: self.source(key) for key in _FIELDS})

    def _sourced_from(self, sources: Mapping[str, ConfigSource]) -> Config:
        object.__setattr__(self, "_sources", MappingProxyType(dict(sources)))
        return self

    def __getstate__(self) -> tuple[list[object], dict[str, ConfigSource]]:
        """Pickled with its sources (the dataclass's own state would drop them)."""
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return values, dict(getattr(self, "_sources", {}))

    def __setstate__(self, state: tuple[list[object], dict[str, ConfigSource]]) -> None:
        values, sources = state
        for f, value in zip(dataclasses.fields(self), values, strict=True):
            object.__setattr__(self, f.name, value)
        if sources:
            self._sourced_from(sources)

    def as_dict(self, *, reveal_secrets: bool = False) -> dict[str, object]:
        """Every setting by key, in field order, with paths as strings; secrets that are
        set show as ``SECRET_MASK`` unless ``reveal_secrets``."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value and not reveal_secrets:
                value = SECRET_MASK
            if isinstance(value, BridgeAcl):
                value = value.as_table(reveal_secrets=reveal_secrets)
            elif f.name == "mcp_servers":
                value = [server.as_table(reveal_secrets=reveal_secrets) for server in value]
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Config)}
_TYPES: dict[str, type] = typing.get_type_hints(Config)
_ENV_NAMES: dict[str, str] = {_ENV_PREFIX + key.upper(): key for key in _FIELDS}
_TABLES: frozenset[str] = frozenset(key for key, f in _FIELDS.items() if f.metadata.get("table"))
"""Settings whose value is a table (not flattened into keys when read from TOML)."""
_PATH_STRINGS: tuple[str, ...] = tuple(key for key, f in _FIELDS.items() if f.metadata.get("path"))
"""String settings naming a file, empty when unset, resolved like ``data_dir``."""


def _is_table(key: str) -> bool:
    return key in _TABLES


def describe() -> list[tuple[str, str, object, str]]:
    """``(key, type name, default, doc)`` for every setting, in field order."""
    return [
        (f.name, _TYPES[f.name].__name__, f.default, str(f.metadata["doc"]))
        for f in dataclasses.fields(Config)
    ]


# --- sources ------------------------------------------------------------------------------


def _sourced(kind: SourceKind, name: str = "") -> typing.Callable[[str], ConfigSource]:
    """Every key from one source: the same :class:`ConfigSource`."""
    source = ConfigSource(kind, name)
    return lambda _key: source


def _absolute_path(value: object, source: ConfigSource, cwd: Path) -> Path:
    """A path setting (``data_dir``, the bridge's TLS files) made absolute: from the TOML
    file's directory if a file set it, else from the working directory; ``~`` expanded."""
    path = Path(typing.cast(Path, value)).expanduser()
    if path.is_absolute():
        return path
    base = Path(source.name).parent if source.kind == "file" else cwd
    return base / path


def _find_file(
    config_file: str | os.PathLike[str] | None, environ: Mapping[str, str], cwd: Path
) -> Path | None:
    if config_file is not None:
        return _must_exist(cwd / Path(config_file), "")
    if _ENV_CONFIG in environ:
        raw = environ[_ENV_CONFIG]
        if not raw:
            raise ConfigError("config_file", f"environment variable {_ENV_CONFIG} is empty")
        return _must_exist(cwd / raw, f" (from environment variable {_ENV_CONFIG})")
    candidate = cwd / _FILE_NAME
    return candidate if candidate.is_file() else None


def _must_exist(path: Path, origin: str) -> Path:
    if not path.exists():
        raise ConfigError("config_file", f"file not found: {path}{origin}")
    return path


def _from_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config_file", f"cannot parse {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("config_file", f"cannot parse {path}: not UTF-8 ({exc})") from exc
    except OSError as exc:
        raise ConfigError("config_file", f"cannot read {path}: {exc.strerror or exc}") from exc
    source = f"in {path}"
    values: dict[str, object] = {}
    for key, value in _flatten(document, ""):
        if key in values:
            raise ConfigError(key, f"set more than once ({source})")
        if key not in _FIELDS:
            raise ConfigError(key, f"unknown key ({source}){_suggest(key, _FIELDS)}")
        values[key] = _coerce(key, value, source)
    return values


def _flatten(table: Mapping[str, object], prefix: str) -> list[tuple[str, object]]:
    """``(key, value)`` of every setting in a TOML document: nested tables join their names
    with ``_``, except a setting whose value is itself a table (``bridge_acl``)."""
    items: list[tuple[str, object]] = []
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and not _is_table(key):
            items.extend(_flatten(value, f"{key}_"))
        else:
            items.append((key, value))
    return items


# Loom's variable names, read when the LOOMK_ one is absent; an empty value counts as unset.
_ALIASES: dict[str, tuple[str, float]] = {  # variable -> (key, factor applied to numbers)
    "VLLM_BASE_URL": ("llm_base_url", 1.0),
    "VLLM_MODEL": ("llm_model", 1.0),
    "VLLM_API_KEY": ("llm_api_key", 1.0),
    "VLLM_TEMPERATURE": ("llm_temperature", 1.0),
    "REQUEST_TIMEOUT_MS": ("llm_timeout_s", 0.001),
    "LOOM_BRIDGE_ADDR": ("bridge_address", 1.0),
}
_ALIAS_OF: dict[str, str] = {key: var for var, (key, _) in _ALIASES.items()}


def _from_aliases(environ: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for var, (key, factor) in _ALIASES.items():
        text = environ.get(var, "")
        if not text:
            continue
        source = f"from environment variable {var}"
        if factor != 1.0:
            try:
                text = repr(float(text) * factor)
            except ValueError:
                raise _bad(key, environ[var], source) from None
        values[key] = _parse_text(key, text, source)
    return values


def _from_env(environ: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for var in sorted(environ):
        if not var.startswith(_ENV_PREFIX) or var == _ENV_CONFIG:
            continue
        key = _ENV_NAMES.get(var)
        if key is None:
            hint = _suggest(var, [*_ENV_NAMES, _ENV_CONFIG])
            raise ConfigError(var, f"unknown environment variable{hint}")
        values[key] = _parse_text(key, environ[var], f"from environment variable {var}")
    return values


def _from_kwargs(kwargs: Mapping[str, object], source: str = _KWARG_SOURCE) -> dict[str, object]:
    values: dict[str, object] = {}
    for key, value in kwargs.items():
        if key not in _FIELDS:
            raise ConfigError(key, f"unknown key ({source}){_suggest(key, _FIELDS)}")
        values[key] = _coerce(key, value, source)
    return values


def _suggest(name: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; see loomk.config.describe() for the known keys"


# --- values -------------------------------------------------------------------------------


def _parse_text(key: str, text: str, source: str) -> object:
    """Parse an environment string to ``key``'s type, then check its constraints."""
    kind = _TYPES[key]
    value: object
    if kind is bool:
        parsed = _BOOL_WORDS.get(text.strip().lower())
        if parsed is None:
            raise _bad(key, text, source)
        value = parsed
    elif kind is int:
        try:
            value = int(text, 10)
        except ValueError:
            raise _bad(key, text, source) from None
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            raise _bad(key, text, source) from None
    elif kind is Path:
        if not text:
            raise _bad(key, text, source)
        value = Path(text)
    elif _is_table(key):
        try:
            document = json.loads(text)
        except ValueError as error:  # the text is not shown: it may hold tokens
            shape = "a JSON array" if key == "mcp_servers" else "a JSON object"
            raise ConfigError(
                key,
                f"expected {shape} ({_expected(key)}), got text that is not JSON "
                f"({error.__class__.__name__} at character {getattr(error, 'pos', '?')}) "
                f"({source})",
            ) from None
        return _coerce(key, document, source)
    else:
        value = text
    return _check(key, value, source, given=text)


def _coerce(key: str, value: object, source: str) -> object:
    """Check a typed value (TOML or Python) against ``key``'s type and constraints."""
    kind = _TYPES[key]
    ok: bool
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            try:
                value = float(typing.cast(float, value))
            except OverflowError:
                raise _bad(key, value, source) from None
    elif kind is Path:
        raw = _text_path(value)
        ok = raw is not None
        if raw == "":
            raise _bad(key, value, source)
        if raw:
            value = Path(raw)
    elif kind is BridgeAcl:
        try:
            value = BridgeAcl.from_table(value)
        except ValueError as error:
            raise ConfigError(key, f"{error} ({source})") from None
        ok = True
    elif key == "mcp_servers":
        try:
            value = mcp_servers_from(value)
        except ValueError as error:
            raise ConfigError(key, f"{error} ({source})") from None
        ok = True
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise _bad(key, value, source, show_type=True)
    return _check(key, value, source, given=value)


def _text_path(value: object) -> str | None:
    """The str form of a str or os.PathLike ``value``; None for anything else (bytes too)."""
    if not isinstance(value, str | os.PathLike):
        return None
    try:
        raw = os.fspath(value)
    except TypeError:
        return None
    return raw if isinstance(raw, str) else None


def _check(key: str, value: object, source: str, *, given: object) -> object:
    """Apply ``key``'s range, choice and shape constraints; return the normalised value."""
    meta = _FIELDS[key].metadata
    ok = True
    if isinstance(value, str):
        if "choices" in meta:
            value = value.lower()
            ok = value in meta["choices"]
        elif meta.get("token"):
            ok = bool(value) and not any(ch.isspace() for ch in value)
        if "shape" in meta:
            ok = ok and bool(meta["shape"](value))
    elif isinstance(value, float):
        ok = math.isfinite(value)
    if ok and "min" in meta:
        ok = typing.cast(int, value) >= meta["min"]
    if ok and "gt" in meta:
        ok = typing.cast(float, value) > meta["gt"]
    if not ok:
        raise _bad(key, given, source)
    return value


def _bad(key: str, given: object, source: str, *, show_type: bool = False) -> ConfigError:
    shown = f"{given!r} ({type(given).__name__})" if show_type else repr(given)
    if _FIELDS[key].metadata.get("secret") or _is_table(key):  # it may hold a secret
        shown = f"a {type(given).__name__} not shown (secret)"
    return ConfigError(key, f"expected {_expected(key)}, got {shown} ({source})")


def _expected(key: str) -> str:
    """Describe in words what ``key`` accepts."""
    kind = _TYPES[key]
    meta = _FIELDS[key].metadata
    if "expected" in meta:
        return str(meta["expected"])
    if "choices" in meta:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    if meta.get("token"):
        return "a non-empty string without whitespace"
    if kind is bool:
        return "a boolean (true/false, yes/no, on/off, 1/0)"
    if kind is Path:
        return "a non-empty path (str or os.PathLike)"
    if kind is int:
        text = "an integer"
    elif kind is float:
        text = "a finite number"
    else:
        text = "a string"
    if "min" in meta:
        text += f" >= {meta['min']}"
    if "gt" in meta:
        text += f" > {meta['gt']:g}"
    return text


# --- settings that go together, and shapes --------------------------------------------------


def _check_together(config: Config) -> Config:
    """Rules across settings, checked once all sources are merged: the bridge's TLS
    certificate and key are set together, client certificates need TLS, and no agent's
    token in ``bridge_acl`` is ``bridge_token``."""
    cert, key = config.bridge_tls_cert, config.bridge_tls_key
    if bool(cert) != bool(key):
        given, missing = ("bridge_tls_cert", "bridge_tls_key")
        if not cert:
            given, missing = missing, given
        raise ConfigError(
            missing,
            f"{given} is set ({config.source(given)}) but {missing} is not: set both "
            "(TLS needs the certificate and its key) or neither (plaintext)",
        )
    if config.bridge_tls_client_ca and not cert:
        raise ConfigError(
            "bridge_tls_client_ca",
            f"set ({config.source('bridge_tls_client_ca')}) without bridge_tls_cert and "
            "bridge_tls_key: client certificates are checked only over TLS",
        )
    token = config.bridge_token
    for agent, entry in config.bridge_acl.items():
        if token and entry.token and hmac.compare_digest(entry.token, token):
            raise ConfigError(
                "bridge_acl",
                f"entry {agent!r} has the token of bridge_token ({config.source('bridge_acl')}): "
                "an agent's own token must differ from the one every client may use",
            )
    return config


_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


_LOG_LEVEL_NAMES = frozenset(("debug", "info", "warning", "error", "critical"))


def _log_levels_shape(value: str) -> bool:
    """Whether ``value`` reads as ``LOGGER=LEVEL[,LOGGER=LEVEL...]`` (or is empty)."""
    if not value.strip():
        return True
    for pair in value.split(","):
        name, equals, level = pair.partition("=")
        if not equals or not name.strip() or level.strip().lower() not in _LOG_LEVEL_NAMES:
            return False
    return True


def parse_log_levels(value: str) -> dict[str, str]:
    """The ``log_levels`` setting as ``{logger: level}`` (validated by :class:`Config`)."""
    levels: dict[str, str] = {}
    for pair in value.split(","):
        name, _, level = pair.partition("=")
        if name.strip():
            levels[name.strip()] = level.strip().lower()
    return levels


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` address, or None if it is not one.

    ``HOST`` is a host name, an IPv4 address or an IPv6 address in brackets (returned
    without them); a bare ``:PORT`` gives host ``""``, meaning every interface (as asyncio
    and grpclib take it). ``PORT`` is 0..65535 (0: the system picks a free port). The empty
    string, meaning "not set", is not an address: it gives None too, and ``bridge_address``
    accepts it separately.
    """
    host, colon, port_text = address.rpartition(":")
    if not colon or not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        return None
    port = int(port_text)
    if port > 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif host and _HOST_NAME.fullmatch(host) is None:
        return None
    return host, port


_SHARE_QOS = ("realtime", "batched", "background")
_PATTERN_TOKEN = re.compile(r"[^\s.*>]+|\*|>")


def parse_cluster_share(value: str) -> list[tuple[str, str]]:
    """The ``cluster_share`` setting as ``[(pattern, qos)]`` (``ValueError`` saying what is
    wrong; :class:`Config` has validated its own)."""
    shared: list[tuple[str, str]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        pattern, _, qos = item.partition("=")
        pattern, qos = pattern.strip(), (qos.strip().lower() or "realtime")
        tokens = pattern.split(".")
        if not all(_PATTERN_TOKEN.fullmatch(t) for t in tokens) or ">" in tokens[:-1]:
            raise ValueError(f"{pattern!r} is not a topic pattern")
        if qos not in _SHARE_QOS:
            raise ValueError(f"{item!r}: the QoS must be one of {', '.join(_SHARE_QOS)}")
        shared.append((pattern, qos))
    if not shared:
        raise ValueError("no pattern is shared")
    patterns = [pattern for pattern, _ in shared]
    for index, first in enumerate(patterns):
        for second in patterns[index + 1 :]:
            if (
                patterns_overlap(first, second)
                and not pattern_covers(first, second)
                and not pattern_covers(second, first)
            ):
                raise ValueError(
                    f"patterns {first!r} and {second!r} overlap (a topic matches both, and "
                    "neither holds the other): share one pattern that covers both, or "
                    "patterns that do not meet"
                )
    durable = [pattern for pattern, qos in shared if qos != "realtime"]
    for index, first in enumerate(durable):
        for second in durable[index + 1 :]:
            if patterns_overlap(first, second):
                raise ValueError(
                    f"batched patterns {first!r} and {second!r} overlap: a topic may belong to "
                    "one JetStream stream only"
                )
    return shared


def patterns_overlap(first: str, second: str) -> bool:
    """Whether some topic matches both patterns (NATS subject grammar)."""
    a, b = first.split("."), second.split(".")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == ">":
            return y is not None
        if y == ">":
            return x is not None
        if x is None or y is None:
            return False
        if x != y and x != "*" and y != "*":
            return False
    return True


def pattern_covers(outer: str, inner: str) -> bool:
    """Whether every topic matching ``inner`` matches ``outer`` (NATS subject grammar)."""
    a, b = outer.split("."), inner.split(".")
    for index, token in enumerate(a):
        if token == ">":
            return len(b) > index  # the rest of inner is one or more tokens
        if index >= len(b):
            return False
        other = b[index]
        if other == ">" or (token != "*" and (other == "*" or other != token)):
            return False
    return len(a) == len(b)


def covering_patterns(patterns: Iterable[str]) -> list[str]:
    """``patterns`` without those another one covers (each kept once, in order): a topic
    matching several of them is then matched by fewer subscriptions."""
    unique = list(dict.fromkeys(patterns))
    return [
        p
        for i, p in enumerate(unique)
        if not any(
            pattern_covers(q, p) and (not pattern_covers(p, q) or j < i)
            for j, q in enumerate(unique)
            if j != i
        )
    ]


def _cluster_share_problem(value: str) -> str:
    try:
        parse_cluster_share(value)
    except ValueError as error:
        return str(error)
    return ""
