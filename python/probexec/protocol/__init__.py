"""Wire protocol: the codec (compiled from protocol/ppx.fbs) and the ZeroMQ transport."""

from probexec.protocol.messages import MessageType
from probexec.protocol.transport import Connection

__all__ = ["Connection", "MessageType"]
