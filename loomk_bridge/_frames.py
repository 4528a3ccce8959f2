"""How frames are read off the wire: protobuf (upb) with a size limit and typed refusals.

grpclib hands each received message's bytes to the codec. Decoding here, rather than in the
handlers, lets one place turn an oversized or undecodable frame into a gRPC status the client
can read (``RESOURCE_EXHAUSTED``, ``INVALID_ARGUMENT``) instead of an ``UNKNOWN`` error, and
only that one stream ends: the server and every other client go on.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

__all__ = ["LimitedProtoCodec"]


class LimitedProtoCodec(ProtoCodec):
    """protobuf messages no larger than ``max_bytes`` (``bridge_max_message_bytes``)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def decode(self, data: bytes, message_type: type[Any]) -> Any:
        if len(data) > self.max_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"a message of {len(data)} bytes is over this server's limit of "
                f"{self.max_bytes} bytes (bridge_max_message_bytes)",
            )
        try:
            return message_type.FromString(data)
        except DecodeError as error:
            name = message_type.DESCRIPTOR.full_name
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"cannot decode a {name} message: {error}"
            ) from None

    def encode(self, message: Any, message_type: type[Any]) -> bytes:
        return message.SerializeToString()  # type: ignore[no-any-return]
