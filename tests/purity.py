"""Watch a block of code for what a pure function must not do: I/O, the clock, chance, the environment.

Three witnesses, because no single one sees everything:
- an audit hook (PEP 578): every audited operation is I/O or close to it (open, os.*, socket.*, subprocess.*,
  a module import that loads code, time.sleep, ...);
- a profile hook, for calls into Python code outside PURE_PACKAGES (os.environ is Python code in `os`, logging,
  random, uuid, prefect, litellm ...);
- the same profile hook, for C functions of the clock, chance and I/O (time.time, datetime.now, os.getpid,
  Random methods, print), which raise no audit event.

The audit hook is installed once per process (it cannot be removed) and records only while `watch()` is active, and
only for the thread that entered it; garbage collection is paused meanwhile, so no other code's gc callback runs
inside the block.
"""

from __future__ import annotations

import _thread
import gc
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["PURE_PACKAGES", "watch"]

# Python code the watched block may run: computation only. A new entry is a claim that the package touches nothing
# outside the process; add one only after reading what the block calls there.
PURE_PACKAGES = frozenset({
    "prefect_micro_agents", "toy_agent", "pydantic", "pydantic_core", "annotated_types", "typing", "typing_extensions", "abc", "enum",
    "functools", "dataclasses", "re", "json", "collections", "_collections_abc", "copy", "hashlib", "types",
    "operator",
})
# C functions that read the clock, chance, the process or the outside world (by the module that owns them).
_IMPURE_C_OWNERS = frozenset({
    "time", "posix", "nt", "_socket", "socket", "select", "selectors", "_io", "io", "_random", "random", "_thread",
    "threading", "_signal", "signal", "_ssl", "_sqlite3", "mmap", "fcntl", "resource", "_posixsubprocess", "pwd",
    "grp", "_locale", "locale", "_uuid", "uuid", "secrets",
})
_IMPURE_BUILTINS = frozenset({"open", "print", "input", "breakpoint", "__import__", "exec", "eval", "compile", "id",
                              "hash"})
# Audit events that only look at the interpreter's own objects (tracers such as hypothesis's read frame.f_code).
_INTROSPECTION = frozenset({"object.__getattr__", "sys._getframe"})
_CLOCK_METHODS = frozenset({"now", "utcnow", "today"})  # datetime.datetime / datetime.date

_findings: list[str] | None = None  # None: nobody is watching
_owner = 0  # the thread that is watching
_installed = False


def _c_owner(fn: Any) -> tuple[str, str]:
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", "?")
    if owner is None or isinstance(owner, types.ModuleType):
        return getattr(fn, "__module__", None) or getattr(owner, "__name__", "builtins"), name
    cls = owner if isinstance(owner, type) else type(owner)
    return cls.__module__, f"{cls.__qualname__}.{name}"


def _report(line: Callable[[], str]) -> None:
    """Record one finding; the watch pauses meanwhile (reading frame.f_code raises an audit event of its own)."""
    global _findings
    found, _findings = _findings, None
    try:
        if found is not None:
            found.append(line())
    finally:
        _findings = found


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    if _findings is not None and _thread.get_ident() == _owner and event not in _INTROSPECTION:
        _findings.append(f"audit event {event} {args!r:.160}")


def _on_profile(frame: types.FrameType, what: str, arg: Any) -> None:
    if _findings is None:
        return
    if what == "call":
        module = frame.f_globals.get("__name__") or "?"
        if module.partition(".")[0] not in PURE_PACKAGES and frame.f_globals is not globals():  # not watch.__exit__
            _report(lambda: f"ran {module}.{frame.f_code.co_qualname} ({frame.f_code.co_filename}:{frame.f_lineno})")
    elif what == "c_call":
        module, name = _c_owner(arg)
        top = module.partition(".")[0]
        if (top in _IMPURE_C_OWNERS or (module == "builtins" and name in _IMPURE_BUILTINS)
                or (top in ("datetime", "_datetime") and name.rpartition(".")[2] in _CLOCK_METHODS)):
            _report(lambda: f"called {module}.{name}")


class watch:  # noqa: N801 (used like a function: `with watch() as found:`)
    """Collect, in the list `with` gives, one line per impure thing the block did (empty: nothing seen)."""

    def __enter__(self) -> list[str]:
        global _findings, _owner, _installed
        if not _installed:
            sys.addaudithook(_on_audit)
            _installed = True
        assert _findings is None, "watch() does not nest"
        self.found: list[str] = []
        self.gc_was_on = gc.isenabled()
        gc.disable()  # a collection would run other code's gc callbacks (hypothesis times them) inside the block
        self.previous: Callable[..., Any] | None = sys.getprofile()
        sys.setprofile(_on_profile)
        _owner, _findings = _thread.get_ident(), self.found  # from here on, everything counts
        return self.found

    def __exit__(self, *_: object) -> None:
        global _findings
        _findings = None  # first: setprofile raises an audit event of its own
        sys.setprofile(self.previous)
        if self.gc_was_on:
            gc.enable()
