"""Pull and StreamingPull responses built from the stored bytes of each message.

The emulator keeps every message serialized (:mod:`emulators.pubsub.retained`), so a
response is encoded directly: both ``PullResponse`` and ``StreamingPullResponse``
start with ``repeated ReceivedMessage received_messages = 1``, and a
``ReceivedMessage`` is ``ack_id = 1``, ``message = 2`` (the stored bytes as they are),
``delivery_attempt = 3``. One parse of the result gives the response protobuf.
"""
from __future__ import annotations

__all__ = ["received_messages_bytes", "PER_MESSAGE_OVERHEAD"]

# What a ReceivedMessage adds to its message's bytes, at most: two tags and lengths
# around it, the ack id with its tag and length (ack ids are "<gen>-<seq>-<lease>",
# well under 64 characters), the message's tag and length, the delivery attempt.
PER_MESSAGE_OVERHEAD = 100


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def received_messages_bytes(taken) -> bytes:
    """``received_messages`` field bytes of ``(ack_id, wire, delivery_attempt)``."""
    parts: list[bytes] = []
    for ack_id, wire, attempt in taken:
        ack = ack_id.encode()
        ack_len, wire_len = _varint(len(ack)), _varint(len(wire))
        tail = b"\x18" + _varint(attempt) if attempt else b""
        size = 2 + len(ack_len) + len(ack) + len(wire_len) + len(wire) + len(tail)
        parts += (b"\x0a", _varint(size), b"\x0a", ack_len, ack, b"\x12", wire_len,
                  wire, tail)
    return b"".join(parts)
