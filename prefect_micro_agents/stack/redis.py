"""A Redis server of its own: Debian's `redis-server` as a child process on 127.0.0.1 and a free port, with a
generated password (in a 0600 config file, never on the command line) and no persistence (a stack for tests and
trials; Prefect's messages are transient, and what must last is in Postgres).

Missing binary: `RedisNotFound` says how to install it (`apt-get install redis-server`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from prefect_micro_agents.stack.processes import Component, ComponentStartError

__all__ = ["LocalRedis", "RedisNotFound", "redis_command"]

HOST = "127.0.0.1"
NAME = "redis"


class RedisNotFound(ComponentStartError):
    def __init__(self, message: str) -> None:
        super().__init__(NAME, message)


def redis_command(port: int, password: str, *commands: list[str], timeout: float = 5.0) -> list[bytes]:
    """Send commands to Redis (RESP over a plain socket; no client library) and return each raw first reply line."""
    payload = b""
    for command in [["AUTH", password], *commands]:
        payload += f"*{len(command)}\r\n".encode()
        for part in command:
            data = part.encode()
            payload += b"$" + str(len(data)).encode() + b"\r\n" + data + b"\r\n"
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        buffer = b""
        while buffer.count(b"\r\n") < len(commands) + 1:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    return buffer.split(b"\r\n")[: len(commands) + 1]


class LocalRedis:
    """redis-server in `root` (config `redis.conf`, log `redis.log`); `password`, `port` once started."""

    def __init__(self, root: Path, *, port: int, progress: Callable[[str], None] | None = None,
                 log_path: Path | None = None, startup_timeout: float = 30.0) -> None:
        self.root = root.resolve()
        self.port = port
        self.progress = progress
        self.startup_timeout = startup_timeout
        self.password = secrets.token_hex(16)
        self.log_path = log_path or self.root / "redis.log"
        self.component: Component | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://default:{self.password}@{HOST}:{self.port}/{db}"

    def ping(self) -> bool:
        replies = redis_command(self.port, self.password, ["PING"])
        return replies[:2] == [b"+OK", b"+PONG"]

    def consumer_groups(self, stream: str) -> set[str]:
        """Names of the consumer groups reading `stream` (empty when the stream does not exist yet)."""
        import redis

        client = redis.Redis(host=HOST, port=self.port, password=self.password, socket_timeout=5)
        try:
            return {str(g["name"].decode() if isinstance(g["name"], bytes) else g["name"])
                    for g in client.xinfo_groups(stream)}
        except redis.ResponseError:  # no such key
            return set()
        finally:
            client.close()

    def start(self) -> LocalRedis:
        binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                                  else None)
        if binary is None:
            raise RedisNotFound("redis-server was not found on PATH. Install it: `apt-get install -y redis-server` "
                                "on Debian/Ubuntu (scripts/install-system-deps does it when root)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "redis.conf"
        config.write_text(
            f"bind {HOST}\nport {self.port}\nprotected-mode yes\ndir {self.root}\nsave \"\"\nappendonly no\n"
            f"daemonize no\nlogfile \"\"\nrequirepass {self.password}\n")
        config.chmod(0o600)
        self.component = Component(
            NAME, [binary, str(config)], log_path=self.log_path,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}, cwd=self.root,
            ready=self.ping, startup_timeout=self.startup_timeout, progress=self.progress)
        self.component.start()
        return self

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()
