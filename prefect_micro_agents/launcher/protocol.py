"""The launcher's messages: JSON objects, one per SOCK_SEQPACKET packet (the kernel keeps their boundaries).

client -> server   {"argv": [...], "env": {...}, "cwd": "..."} with the client's fds 0, 1, 2 attached (SCM_RIGHTS)
                   {"signal": N}                       relay signal N to the child
server -> client   {"pid": N}                          the child exists (it starts once this is sent)
                   {"error": "..."}                    refused; no child was started
                   {"exit": CODE} | {"signaled": N}    the child ended
"""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_PACKET = 1 << 20  # a start request carries the whole environment


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if len(data) > MAX_PACKET:
        raise ValueError(f"launcher message of {len(data)} bytes exceeds {MAX_PACKET}")
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the fds that came with it; (None, []) at end of stream."""
    if max_fds:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_PACKET, max_fds)
    else:
        data, fds = sock.recv(MAX_PACKET), []
    if not data:
        for fd in fds:
            _close(fd)
        return None, []
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"launcher message is not an object: {data[:200]!r}")
    return message, fds


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass
