"""Length-prefixed JSON frames over sockets and pipes, optionally carrying file descriptors."""

from __future__ import annotations

import json
import os
import socket
import struct

_HEADER = struct.Struct("!I")


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


def recv(sock: socket.socket, max_fds: int = 0):
    """(obj, fds); obj is None when the peer closed the connection."""
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
    body = _recv_exact(sock, _HEADER.unpack(header)[0])
    return (json.loads(body) if body is not None else None), fds


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
    """Accumulates bytes read from a non-blocking pipe until one whole frame is there."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes):
        self.buf += data
        if len(self.buf) < _HEADER.size:
            return None
        n = _HEADER.unpack(self.buf[: _HEADER.size])[0]
        if len(self.buf) < _HEADER.size + n:
            return None
        return json.loads(bytes(self.buf[_HEADER.size : _HEADER.size + n]))
