from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_STATE_UNSPECIFIED: _ClassVar[InstanceState]
    STARTING: _ClassVar[InstanceState]
    IDLE: _ClassVar[InstanceState]
    BUSY: _ClassVar[InstanceState]
    KEPT_ALIVE: _ClassVar[InstanceState]
    DEAD: _ClassVar[InstanceState]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_NONE: _ClassVar[ErrorKind]
    FUNCTION_ERROR: _ClassVar[ErrorKind]
    TIMEOUT: _ClassVar[ErrorKind]
    OUT_OF_MEMORY: _ClassVar[ErrorKind]
    TRAP: _ClassVar[ErrorKind]
    OUT_OF_FUEL: _ClassVar[ErrorKind]
    RESPONSE_TOO_LARGE: _ClassVar[ErrorKind]
    INTERNAL: _ClassVar[ErrorKind]

class IdleReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDLE_REASON_UNSPECIFIED: _ClassVar[IdleReason]
    FINISHED: _ClassVar[IdleReason]
    KEEPALIVE_EXPIRED: _ClassVar[IdleReason]
INSTANCE_STATE_UNSPECIFIED: InstanceState
STARTING: InstanceState
IDLE: InstanceState
BUSY: InstanceState
KEPT_ALIVE: InstanceState
DEAD: InstanceState
ERROR_KIND_NONE: ErrorKind
FUNCTION_ERROR: ErrorKind
TIMEOUT: ErrorKind
OUT_OF_MEMORY: ErrorKind
TRAP: ErrorKind
OUT_OF_FUEL: ErrorKind
RESPONSE_TOO_LARGE: ErrorKind
INTERNAL: ErrorKind
IDLE_REASON_UNSPECIFIED: IdleReason
FINISHED: IdleReason
KEEPALIVE_EXPIRED: IdleReason

class KeepAlive(_message.Message):
    __slots__ = ("ms",)
    MS_FIELD_NUMBER: _ClassVar[int]
    ms: int
    def __init__(self, ms: _Optional[int] = ...) -> None: ...

class Kill(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Invoke(_message.Message):
    __slots__ = ("request_id", "payload", "metadata", "timeout_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    payload: bytes
    metadata: _containers.ScalarMap[str, str]
    timeout_ms: int
    def __init__(self, request_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class DoRequest(_message.Message):
    __slots__ = ("instance_id", "keep_alive", "kill", "invoke", "spawn", "call_id")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    SPAWN_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    keep_alive: KeepAlive
    kill: Kill
    invoke: Invoke
    spawn: SpawnRequest
    call_id: int
    def __init__(self, instance_id: _Optional[str] = ..., keep_alive: _Optional[_Union[KeepAlive, _Mapping]] = ..., kill: _Optional[_Union[Kill, _Mapping]] = ..., invoke: _Optional[_Union[Invoke, _Mapping]] = ..., spawn: _Optional[_Union[SpawnRequest, _Mapping]] = ..., call_id: _Optional[int] = ...) -> None: ...

class DoReply(_message.Message):
    __slots__ = ("instance_id", "state", "invoke", "spawn", "call_id", "error_code", "error_message")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    SPAWN_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    state: InstanceState
    invoke: InvokeResult
    spawn: SpawnReply
    call_id: int
    error_code: str
    error_message: str
    def __init__(self, instance_id: _Optional[str] = ..., state: _Optional[_Union[InstanceState, str]] = ..., invoke: _Optional[_Union[InvokeResult, _Mapping]] = ..., spawn: _Optional[_Union[SpawnReply, _Mapping]] = ..., call_id: _Optional[int] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class DoBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[DoRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[DoRequest, _Mapping]]] = ...) -> None: ...

class DoReplyBatch(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[DoReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[DoReply, _Mapping]]] = ...) -> None: ...

class InvokeResult(_message.Message):
    __slots__ = ("request_id", "output", "error", "error_message", "logs", "exec_ms", "instance_recycled", "max_memory_bytes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    EXEC_MS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_RECYCLED_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    output: bytes
    error: ErrorKind
    error_message: str
    logs: bytes
    exec_ms: float
    instance_recycled: bool
    max_memory_bytes: int
    def __init__(self, request_id: _Optional[str] = ..., output: _Optional[bytes] = ..., error: _Optional[_Union[ErrorKind, str]] = ..., error_message: _Optional[str] = ..., logs: _Optional[bytes] = ..., exec_ms: _Optional[float] = ..., instance_recycled: _Optional[bool] = ..., max_memory_bytes: _Optional[int] = ...) -> None: ...

class SpawnRequest(_message.Message):
    __slots__ = ("function", "version", "instance_id", "invoke")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    function: str
    version: str
    instance_id: str
    invoke: Invoke
    def __init__(self, function: _Optional[str] = ..., version: _Optional[str] = ..., instance_id: _Optional[str] = ..., invoke: _Optional[_Union[Invoke, _Mapping]] = ...) -> None: ...

class SpawnReply(_message.Message):
    __slots__ = ("instance_id", "function", "version", "sha256", "abi", "memory_mb", "timeout_ms", "cold_start_ms", "fetch_ms", "compile_ms", "instantiate_ms", "code_cached", "compile_cached", "compile_source", "concurrency", "max_payload_bytes", "invoke", "invoke_error_code", "invoke_error_message")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ABI_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    COLD_START_MS_FIELD_NUMBER: _ClassVar[int]
    FETCH_MS_FIELD_NUMBER: _ClassVar[int]
    COMPILE_MS_FIELD_NUMBER: _ClassVar[int]
    INSTANTIATE_MS_FIELD_NUMBER: _ClassVar[int]
    CODE_CACHED_FIELD_NUMBER: _ClassVar[int]
    COMPILE_CACHED_FIELD_NUMBER: _ClassVar[int]
    COMPILE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    INVOKE_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    INVOKE_ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    function: str
    version: int
    sha256: str
    abi: str
    memory_mb: int
    timeout_ms: int
    cold_start_ms: float
    fetch_ms: float
    compile_ms: float
    instantiate_ms: float
    code_cached: bool
    compile_cached: bool
    compile_source: str
    concurrency: int
    max_payload_bytes: int
    invoke: InvokeResult
    invoke_error_code: str
    invoke_error_message: str
    def __init__(self, instance_id: _Optional[str] = ..., function: _Optional[str] = ..., version: _Optional[int] = ..., sha256: _Optional[str] = ..., abi: _Optional[str] = ..., memory_mb: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., cold_start_ms: _Optional[float] = ..., fetch_ms: _Optional[float] = ..., compile_ms: _Optional[float] = ..., instantiate_ms: _Optional[float] = ..., code_cached: _Optional[bool] = ..., compile_cached: _Optional[bool] = ..., compile_source: _Optional[str] = ..., concurrency: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ..., invoke: _Optional[_Union[InvokeResult, _Mapping]] = ..., invoke_error_code: _Optional[str] = ..., invoke_error_message: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InstanceInfo(_message.Message):
    __slots__ = ("instance_id", "function", "version", "state", "memory_mb", "invocations", "busy_ms", "idle_ms", "keep_alive_remaining_ms", "abi")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    INVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    BUSY_MS_FIELD_NUMBER: _ClassVar[int]
    IDLE_MS_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_REMAINING_MS_FIELD_NUMBER: _ClassVar[int]
    ABI_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    function: str
    version: int
    state: InstanceState
    memory_mb: int
    invocations: int
    busy_ms: float
    idle_ms: float
    keep_alive_remaining_ms: float
    abi: str
    def __init__(self, instance_id: _Optional[str] = ..., function: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[_Union[InstanceState, str]] = ..., memory_mb: _Optional[int] = ..., invocations: _Optional[int] = ..., busy_ms: _Optional[float] = ..., idle_ms: _Optional[float] = ..., keep_alive_remaining_ms: _Optional[float] = ..., abi: _Optional[str] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node_id", "memory_capacity_mb", "memory_used_mb", "instances", "uptime_s", "workers", "wasmtime_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CAPACITY_MB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MB_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    WASMTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    memory_capacity_mb: int
    memory_used_mb: int
    instances: _containers.RepeatedCompositeFieldContainer[InstanceInfo]
    uptime_s: float
    workers: int
    wasmtime_version: str
    def __init__(self, node_id: _Optional[str] = ..., memory_capacity_mb: _Optional[int] = ..., memory_used_mb: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[InstanceInfo, _Mapping]]] = ..., uptime_s: _Optional[float] = ..., workers: _Optional[int] = ..., wasmtime_version: _Optional[str] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("ok", "node_id", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    node_id: str
    message: str
    def __init__(self, ok: _Optional[bool] = ..., node_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class IdleEvent(_message.Message):
    __slots__ = ("node_id", "instance_id", "function", "version", "reason", "idle_since_unix_ms", "result", "node_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDLE_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    NODE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    instance_id: str
    function: str
    version: int
    reason: IdleReason
    idle_since_unix_ms: int
    result: InvokeResult
    node_address: str
    def __init__(self, node_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., function: _Optional[str] = ..., version: _Optional[int] = ..., reason: _Optional[_Union[IdleReason, str]] = ..., idle_since_unix_ms: _Optional[int] = ..., result: _Optional[_Union[InvokeResult, _Mapping]] = ..., node_address: _Optional[str] = ...) -> None: ...

class IdleDirective(_message.Message):
    __slots__ = ("keep_alive", "kill", "invoke")
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    keep_alive: KeepAlive
    kill: Kill
    invoke: Invoke
    def __init__(self, keep_alive: _Optional[_Union[KeepAlive, _Mapping]] = ..., kill: _Optional[_Union[Kill, _Mapping]] = ..., invoke: _Optional[_Union[Invoke, _Mapping]] = ...) -> None: ...
