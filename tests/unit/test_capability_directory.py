"""Unit tests for loomk.actions.CapabilityDirectory: a live, read-only view of the broker."""

from __future__ import annotations

from loomk.actions import (
    ActionBroker,
    ActionCall,
    ActionResult,
    CapabilityDescriptor,
    CapabilityDirectory,
    ProviderKind,
)
from loomk.testing import open_test_kernel

NATIVE = ProviderKind.PROVIDER_NATIVE
MCP = ProviderKind.PROVIDER_MCP
GRPC = ProviderKind.PROVIDER_GRPC
WASM = ProviderKind.PROVIDER_WASM


class Provider:
    """The smallest provider: a descriptor and an invoke that answers OK."""

    def __init__(
        self, name: str, version: str = "1.0.0", kind: ProviderKind = NATIVE, **metadata: str
    ) -> None:
        self._descriptor = CapabilityDescriptor(name, version, kind, metadata)

    @property
    def descriptor(self) -> CapabilityDescriptor:
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        return ActionResult.success(call.id)


def make() -> tuple[ActionBroker, CapabilityDirectory]:
    broker = ActionBroker()
    return broker, CapabilityDirectory(broker)


def keys(descriptors: list[CapabilityDescriptor]) -> list[str]:
    return [d.key for d in descriptors]


def populate(broker: ActionBroker) -> None:
    broker.register(Provider("weather.get", "1.2.0"))
    broker.register(Provider("weather.get", "1.10.0"))
    broker.register(Provider("weather.get", "2.0.0-rc.1"))
    broker.register(Provider("fs.read", "0.1.0", MCP))
    broker.register(Provider("fs.write", "0.1.0", MCP))
    broker.register(Provider("agent.summarise", "1.0.0", GRPC))
    broker.register(Provider("weatherman.talk", "1.0.0"))


def test_empty_directory() -> None:
    _, directory = make()
    assert directory.list() == []
    assert len(directory) == 0
    assert "anything" not in directory
    assert directory.get("anything") is None
    assert directory.find_by_name("anything") == []
    assert directory.by_kind(NATIVE) == []
    assert directory.query() == []


def test_list_is_by_name_then_highest_version_first() -> None:
    broker, directory = make()
    populate(broker)  # registered after the directory was made
    assert keys(directory.list()) == [
        "agent.summarise:1.0.0",
        "fs.read:0.1.0",
        "fs.write:0.1.0",
        "weather.get:2.0.0-rc.1",
        "weather.get:1.10.0",
        "weather.get:1.2.0",
        "weatherman.talk:1.0.0",
    ]
    assert len(directory) == 7
    assert directory.list() == broker.list_capabilities()


def test_find_by_name_is_every_version_highest_first() -> None:
    broker, directory = make()
    populate(broker)
    assert [d.version for d in directory.find_by_name("weather.get")] == [
        "2.0.0-rc.1",
        "1.10.0",
        "1.2.0",
    ]
    assert directory.find_by_name("weather") == []  # names match whole, not by prefix
    assert directory.find_by_name("nope") == []


def test_get_exact_and_highest() -> None:
    broker, directory = make()
    populate(broker)
    highest = directory.get("weather.get")
    assert highest is not None
    assert highest.key == "weather.get:2.0.0-rc.1"
    exact = directory.get("weather.get", "1.2.0")
    assert exact is not None
    assert exact.key == "weather.get:1.2.0"
    assert directory.get("weather.get", "9.9.9") is None
    assert directory.get("nope") is None


def test_get_returns_the_registered_descriptor() -> None:
    broker, directory = make()
    provider = Provider("tts.speak", "0.1.0", desc="Speak text", schema='{"type": "object"}')
    broker.register(provider)
    found = directory.get("tts.speak")
    assert found == provider.descriptor
    assert found is not None
    assert found.description == "Speak text"
    assert found.schema() == {"type": "object"}


def test_by_kind() -> None:
    broker, directory = make()
    populate(broker)
    assert keys(directory.by_kind(MCP)) == ["fs.read:0.1.0", "fs.write:0.1.0"]
    assert keys(directory.by_kind(GRPC)) == ["agent.summarise:1.0.0"]
    assert keys(directory.by_kind(NATIVE)) == [
        "weather.get:2.0.0-rc.1",
        "weather.get:1.10.0",
        "weather.get:1.2.0",
        "weatherman.talk:1.0.0",
    ]
    assert directory.by_kind(WASM) == []


def test_query_by_each_criterion_and_together() -> None:
    broker, directory = make()
    populate(broker)
    assert directory.query() == directory.list()
    assert keys(directory.query(name="fs.read")) == ["fs.read:0.1.0"]
    assert keys(directory.query(version="1.0.0")) == [
        "agent.summarise:1.0.0",
        "weatherman.talk:1.0.0",
    ]
    assert keys(directory.query(kind=MCP)) == ["fs.read:0.1.0", "fs.write:0.1.0"]
    assert keys(directory.query(prefix="fs.")) == ["fs.read:0.1.0", "fs.write:0.1.0"]
    # a prefix matches names by their beginning, so "weather" reaches both
    assert keys(directory.query(prefix="weather")) == [
        "weather.get:2.0.0-rc.1",
        "weather.get:1.10.0",
        "weather.get:1.2.0",
        "weatherman.talk:1.0.0",
    ]
    assert keys(directory.query(name="weather.get", version="1.10.0")) == ["weather.get:1.10.0"]
    assert keys(directory.query(prefix="weather", kind=NATIVE, version="1.0.0")) == [
        "weatherman.talk:1.0.0"
    ]
    assert directory.query(name="fs.read", kind=NATIVE) == []
    assert directory.query(name="weather.get", version="3.0.0") == []
    assert directory.query(prefix="zzz") == []


def test_contains_names_and_keys() -> None:
    broker, directory = make()
    populate(broker)
    assert "weather.get" in directory
    assert "weather.get:1.10.0" in directory
    assert "weather.get:1.11.0" not in directory
    assert "weather" not in directory
    assert 42 not in directory
    assert None not in directory


def test_the_view_is_live() -> None:
    broker, directory = make()
    assert len(directory) == 0
    broker.register(Provider("late.cap", "1.0.0"))
    assert "late.cap" in directory
    assert len(directory) == 1
    assert keys(directory.list()) == ["late.cap:1.0.0"]
    found = directory.get("late.cap")
    assert found is not None
    assert found.version == "1.0.0"

    broker.register(Provider("late.cap", "1.1.0", MCP))
    found = directory.get("late.cap")
    assert found is not None
    assert found.version == "1.1.0"
    assert keys(directory.by_kind(MCP)) == ["late.cap:1.1.0"]
    assert len(directory) == 2

    broker.register(Provider("late.cap", "1.1.0", NATIVE))  # replaced: same key, new kind
    assert directory.by_kind(MCP) == []
    assert len(directory) == 2

    broker.unregister("late.cap", "1.1.0")
    found = directory.get("late.cap")
    assert found is not None
    assert found.version == "1.0.0"
    broker.unregister("late.cap")
    assert "late.cap" not in directory
    assert directory.get("late.cap") is None
    assert directory.list() == []
    assert len(directory) == 0


def test_two_directories_over_one_broker_agree() -> None:
    broker, first = make()
    second = CapabilityDirectory(broker)
    populate(broker)
    assert first.list() == second.list()
    broker.unregister("fs.read")
    assert first.list() == second.list()
    assert "fs.read" not in first
    assert "fs.read" not in second


def test_results_are_copies() -> None:
    broker, directory = make()
    populate(broker)
    listed = directory.list()
    listed.clear()
    assert len(directory.list()) == 7
    found = directory.find_by_name("weather.get")
    found.pop()
    assert len(directory.find_by_name("weather.get")) == 3


async def test_kernel_capabilities_view_kernel_broker() -> None:
    async with open_test_kernel() as kernel:
        assert "k.cap" not in kernel.capabilities
        kernel.broker.register(Provider("k.cap", "2.0.0", MCP))
        assert "k.cap" in kernel.capabilities
        assert keys(kernel.capabilities.by_kind(MCP)) == ["k.cap:2.0.0"]
        assert len(kernel.capabilities) == len(kernel.broker)
        kernel.broker.unregister("k.cap")
        assert "k.cap" not in kernel.capabilities
