"""Length-prefixed JSON frames over sockets and pipes, optionally carrying file descriptors."""

from __future__ import annotations

import json
import os
import socket
import struct

_HEADER = struct.Struct("!I")
MAX_FRAME = 8 << 20  # a control message (code is at most 1 MiB); a run's frames are bounded far lower


class FrameError(ValueError):
    """A frame over its size bound or not JSON: whoever sent it broke the protocol."""


def _decode(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise FrameError(f"a frame that is not JSON: {e}") from None


def _size(header: bytes, max_bytes: int) -> int:
    n = _HEADER.unpack(header)[0]
    if n > max_bytes:
        raise FrameError(f"a frame of {n} bytes, over its {max_bytes} byte bound")
    return n


def encode(obj) -> bytes:
    data = json.dumps(obj).encode()
    return _HEADER.pack(len(data)) + data


def send(sock: socket.socket, obj, fds: list[int] = ()) -> None:
    buf = encode(obj)
    sent = socket.send_fds(sock, [buf], list(fds)) if fds else 0
    sock.sendall(buf[sent:])


def _recv_exact(sock: socket.socket, n: int, first: bytes = b"") -> bytes | None:
    buf = bytearray(first)
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket, max_fds: int = 0, max_bytes: int = MAX_FRAME):
    """(obj, fds); obj is None when the peer closed the connection. Raises FrameError for a frame
    over `max_bytes` or not JSON (the fds received are the caller's to close)."""
    fds: list[int] = []
    if max_fds:
        first, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, max_fds)
        if not first:
            return None, fds
    else:
        first = b""
    header = _recv_exact(sock, _HEADER.size, first)
    if header is None:
        return None, fds
    body = _recv_exact(sock, _size(header, max_bytes))
    return (_decode(body) if body is not None else None), fds


def write_fd(fd: int, obj) -> None:
    view = memoryview(encode(obj))
    while view:
        view = view[os.write(fd, view):]


def read_fd(fd: int):
    """One frame from a blocking fd; None at end of file."""
    reader = FrameReader()
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            return None
        if (obj := reader.feed(data)) is not None:
            return obj


class FrameReader:
    """Accumulates bytes read from a non-blocking pipe until one whole frame is there; a frame over
    `max_bytes` raises FrameError as soon as its header is read."""

    def __init__(self, max_bytes: int = MAX_FRAME) -> None:
        self.buf = bytearray()
        self.max_bytes = max_bytes

    def feed(self, data: bytes):
        self.buf += data
        if len(self.buf) < _HEADER.size:
            return None
        n = _size(bytes(self.buf[: _HEADER.size]), self.max_bytes)
        if len(self.buf) < _HEADER.size + n:
            return None
        return _decode(bytes(self.buf[_HEADER.size : _HEADER.size + n]))
