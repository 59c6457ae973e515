"""Message type numbers of the `MessageBody` union (PPX v1 order, our extensions appended)."""

from __future__ import annotations

from enum import IntEnum


class MessageType(IntEnum):
    HANDSHAKE = 1
    HANDSHAKE_RESULT = 2
    RUN = 3
    RUN_RESULT = 4
    SAMPLE = 5
    SAMPLE_RESULT = 6
    OBSERVE = 7
    OBSERVE_RESULT = 8
    TAG = 9
    TAG_RESULT = 10
    RESET = 11
    # v2
    ERROR = 12
    TRACE_BATCH = 13
    SHUTDOWN = 14
    SHUTDOWN_RESULT = 15


class RunMode(IntEnum):
    PER_DRAW = 0
    STREAM = 1
    REPLAY = 2  # v2, capability "replay": one trace reusing the engine's controlled values


PROTOCOL_VERSION = 2
CAPABILITIES = (
    "stream",
    "local_draws",
    "address_ids",
    "errors",
    "draw_locally",
    "replace",
    "shutdown",
    # The engine takes tags with the next message (a DrawBatch row) rather than one round trip each.
    "local_tags",
)
