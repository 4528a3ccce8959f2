from . import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PluginType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLUGIN_FEATURE_EXTRACTOR: _ClassVar[PluginType]
    PLUGIN_MODEL_BACKEND: _ClassVar[PluginType]
    PLUGIN_TOOL: _ClassVar[PluginType]
    PLUGIN_ACTUATOR: _ClassVar[PluginType]
PLUGIN_FEATURE_EXTRACTOR: PluginType
PLUGIN_MODEL_BACKEND: PluginType
PLUGIN_TOOL: PluginType
PLUGIN_ACTUATOR: PluginType

class PluginMeta(_message.Message):
    __slots__ = ("plugin_id", "name", "version", "type", "capabilities", "config")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLUGIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    plugin_id: str
    name: str
    version: str
    type: PluginType
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    config: _containers.ScalarMap[str, str]
    def __init__(self, plugin_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., type: _Optional[_Union[PluginType, str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., config: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PluginResponse(_message.Message):
    __slots__ = ("success", "error_message", "result", "output_events")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error_message: str
    result: bytes
    output_events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    def __init__(self, success: _Optional[bool] = ..., error_message: _Optional[str] = ..., result: _Optional[bytes] = ..., output_events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ...) -> None: ...

class HealthStatus(_message.Message):
    __slots__ = ("healthy", "message", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    healthy: bool
    message: str
    metrics: _containers.ScalarMap[str, str]
    def __init__(self, healthy: _Optional[bool] = ..., message: _Optional[str] = ..., metrics: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ("plugin_id",)
    PLUGIN_ID_FIELD_NUMBER: _ClassVar[int]
    plugin_id: str
    def __init__(self, plugin_id: _Optional[str] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("plugin_id", "force")
    PLUGIN_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    plugin_id: str
    force: bool
    def __init__(self, plugin_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...
