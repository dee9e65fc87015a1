"""Run one configured command template with captured, truncated output and a hard timeout (whole process group)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel

__all__ = ["CommandResult", "render", "run_command", "truncate"]


class CommandResult(BaseModel):
    """How one command went; `ok` only for exit code 0 within the timeout."""

    name: str
    command: str
    exit_code: int | None
    ok: bool
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""
    duration_ms: float = 0.0

    def summary(self) -> str:
        """Compact text for reports: command, outcome and output."""
        outcome = "timed out" if self.timed_out else f"exit {self.exit_code}"
        parts = [f"$ {self.command} -> {outcome} ({self.duration_ms:.0f} ms)"]
        parts += [f"[{label}]\n{text.rstrip()}" for label, text in (("stdout", self.stdout), ("stderr", self.stderr))
                  if text.strip()]
        return "\n".join(parts)


def truncate(text: str, limit: int) -> str:
    """Keep the head and the tail of long output, saying how much was cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters truncated] ...\n{text[-half:]}"


def render(template: str, values: dict[str, str], shell: bool) -> list[str] | str:
    """Fill placeholders: per argument after shlex-splitting (no shell), or shell-quoted into the string (shell)."""
    if shell:
        return template.format(**{k: shlex.quote(v) for k, v in values.items()})
    return [token.format(**values) for token in shlex.split(template)]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run_command(name: str, template: str, values: dict[str, str], *, shell: bool, cwd: Path, timeout: float,
                output_limit: int, env: dict[str, str] | None = None) -> CommandResult:
    """Run the rendered template in `cwd`; never raises for command failures (they become a failed result)."""
    args = render(template, values, shell)
    shown = args if isinstance(args, str) else shlex.join(args)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(args, shell=shell, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
    except OSError as exc:
        return CommandResult(name=name, command=shown, exit_code=None, ok=False,
                             stderr=f"cannot start command: {type(exc).__name__}: {exc}")
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipes open
            proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            out, err = b"", b"(output lost: a child process kept the pipes open)"
    duration = (time.monotonic() - start) * 1000
    stderr = err.decode("utf-8", errors="replace")
    if timed_out:
        stderr += f"\n[killed after {timeout:g}s timeout]"
    return CommandResult(name=name, command=shown, exit_code=proc.returncode, ok=proc.returncode == 0 and not timed_out,
                         timed_out=timed_out, stdout=truncate(out.decode("utf-8", errors="replace"), output_limit),
                         stderr=truncate(stderr, output_limit), duration_ms=round(duration, 1))
