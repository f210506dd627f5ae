from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class State(_message.Message):
    __slots__ = ("time", "state", "service", "host", "description", "once", "tags", "ttl")
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ONCE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    time: int
    state: str
    service: str
    host: str
    description: str
    once: bool
    tags: _containers.RepeatedScalarFieldContainer[str]
    ttl: float
    def __init__(self, time: _Optional[int] = ..., state: _Optional[str] = ..., service: _Optional[str] = ..., host: _Optional[str] = ..., description: _Optional[str] = ..., once: _Optional[bool] = ..., tags: _Optional[_Iterable[str]] = ..., ttl: _Optional[float] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("time", "state", "service", "host", "description", "tags", "ttl", "attributes", "time_micros", "metric_sint64", "metric_d", "metric_f")
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_MICROS_FIELD_NUMBER: _ClassVar[int]
    METRIC_SINT64_FIELD_NUMBER: _ClassVar[int]
    METRIC_D_FIELD_NUMBER: _ClassVar[int]
    METRIC_F_FIELD_NUMBER: _ClassVar[int]
    time: int
    state: str
    service: str
    host: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    ttl: float
    attributes: _containers.RepeatedCompositeFieldContainer[Attribute]
    time_micros: int
    metric_sint64: int
    metric_d: float
    metric_f: float
    def __init__(self, time: _Optional[int] = ..., state: _Optional[str] = ..., service: _Optional[str] = ..., host: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., ttl: _Optional[float] = ..., attributes: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ..., time_micros: _Optional[int] = ..., metric_sint64: _Optional[int] = ..., metric_d: _Optional[float] = ..., metric_f: _Optional[float] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("string",)
    STRING_FIELD_NUMBER: _ClassVar[int]
    string: str
    def __init__(self, string: _Optional[str] = ...) -> None: ...

class Msg(_message.Message):
    __slots__ = ("ok", "error", "states", "query", "events")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    states: _containers.RepeatedCompositeFieldContainer[State]
    query: Query
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., states: _Optional[_Iterable[_Union[State, _Mapping]]] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class Attribute(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
