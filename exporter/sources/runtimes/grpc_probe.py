"""Whether a unix socket serves one gRPC method, with the standard library alone: one HTTP/2
connection, one unary call with an empty request, and a look at the shape of the reply (no
grpcio, no protobuf: at start-up, where containerd's default socket may be Docker's own
containerd, without the CRI plugin, the exporter need not pay for either).

A call that succeeds answers a HEADERS frame, then DATA (the reply message), then trailers; a
call that fails (an unknown service: UNIMPLEMENTED) answers a single HEADERS frame that ends the
stream (gRPC's "trailers-only" response). The frames are told apart by type and flags, so no
header needs decoding. ``verdict`` is pure; ``call`` does the I/O.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Iterator

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
STREAM = 1  # the call's stream (the first a client opens)
NO_GRPC = "speaks no gRPC"

Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def _string(value: str) -> bytes:
    """An HPACK string literal, not Huffman-coded (every value here is shorter than 127 bytes)."""
    data = value.encode()
    return bytes([len(data)]) + data


def request(method: str) -> bytes:
    """Everything the client sends: the preface, its settings, the call's headers and an empty
    request message. Header fields: :method POST and :scheme http from HPACK's static table,
    :path, :authority and content-type as literals of a static name, te as a literal."""
    fields = (
        b"\x83\x86"
        + b"\x04"
        + _string(method)
        + b"\x01"
        + _string("localhost")
        + b"\x0f\x10"  # content-type: static index 31, on a 4-bit prefix
        + _string("application/grpc")
        + b"\x00"
        + _string("te")
        + _string("trailers")
    )
    message = b"\x00" + struct.pack(">I", 0)  # not compressed, zero bytes long
    return (
        PREFACE
        + frame(SETTINGS, 0, 0)
        + frame(HEADERS, END_HEADERS, STREAM, fields)
        + frame(DATA, END_STREAM, STREAM, message)
    )


def frames(data: bytes) -> Iterator[Frame]:
    """The complete frames at the start of `data` (a server's bytes as read so far)."""
    at = 0
    while len(data) - at >= 9:
        length = int.from_bytes(data[at : at + 3], "big")
        kind, flags, stream = struct.unpack(">BBI", data[at + 3 : at + 9])
        if len(data) - at - 9 < length:
            return
        yield kind, flags, stream & 0x7FFFFFFF, data[at + 9 : at + 9 + length]
        at += 9 + length


def verdict(received: Iterable[Frame], method: str) -> str | None:
    """None when the call answered a message; why not when the server ended it without one; ""
    while the frames so far do not tell."""
    for kind, flags, stream, payload in received:
        if kind == GOAWAY:
            return f"answers gRPC but closed the connection before {method} answered"
        if stream != STREAM:
            continue
        if kind == DATA and payload:
            return None
        if kind == RST_STREAM:
            return f"answers gRPC but refused {method}"
        if kind == HEADERS and flags & END_STREAM:
            return f"answers gRPC but not {method}"
    return ""


def call(path: str, method: str, timeout: float = 2.0) -> str | None:
    """Why the gRPC server at the unix socket `path` does not answer `method` (one connection;
    NO_GRPC for a socket that answers something else, or nothing within `timeout`), or None."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(request(method))
            return _reply(sock, method, deadline)
    except TimeoutError:
        return NO_GRPC
    except OSError as exc:  # refused, reset
        return f"{NO_GRPC} ({exc.strerror or exc})"


def _reply(sock: socket.socket, method: str, deadline: float) -> str | None:
    received, acknowledged = b"", False
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        if not chunk:
            return NO_GRPC
        received += chunk
        if len(received) >= 9 and received[3] != SETTINGS:  # a server's first frame: SETTINGS
            return NO_GRPC
        if not acknowledged:  # the server's settings (the first frame) are acknowledged once
            sock.sendall(frame(SETTINGS, ACK, 0))
            acknowledged = True
        why = verdict(frames(received), method)
        if why != "":
            return why
