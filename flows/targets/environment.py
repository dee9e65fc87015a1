"""The environment a deployed service or a deploy/health/rollback/e2e command gets: explicit, never the worker's.

A worker's environment holds the model's provider keys and Prefect's credentials; a deploy script or a service has
no business with them (and a script that prints its environment would hand them to the agent's context). So a
child process gets only:

- `BASE_ENV`: the variables a process needs to run at all (search path, home, user, locale, time zone, temp dir),
  copied from the worker when set;
- the variables the target config names in `pass_env` (copied from the worker when set; a name that is not set is
  skipped), and the fixed values of `env` (for command targets: in `defaults` and per command, the command's win);
- what the target itself sets (`DEPLOY_SERVICE`, `DEPLOY_ENV`, `DEPLOY_SHA` for commands; `PYTHONUNBUFFERED` and
  `PYTHONDONTWRITEBYTECODE` for the local sample services).

`check_pass_env` refuses a provider key, an AGENT_*/LITELLM_* setting or a Prefect credential in `pass_env`;
`check_env` also refuses a fixed value that looks secret (secret-looking name or a URL with a password): values in
a config passed as a flow parameter are stored with the run, so secrets come from the worker through `pass_env`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from prefect_micro_agents.secrets import is_model_credential, is_secret_name, redact

__all__ = ["BASE_ENV", "check_env", "check_pass_env", "child_env"]

BASE_ENV: tuple[str, ...] = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
                             "TMPDIR", "TERM")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_pass_env(names: Iterable[str]) -> list[str]:
    """The names as given; ValueError for a malformed name or one that holds the agent's own credentials."""
    names = list(names)
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"pass_env: {name!r} is not an environment variable name")
        if is_model_credential(name):
            raise ValueError(f"pass_env: {name} holds the agent's model or Prefect credentials and is never passed "
                             "to deploy commands or services; give the deploy its own variable")
    return names


def check_env(values: Mapping[str, str]) -> dict[str, str]:
    """Fixed variables; ValueError for a malformed or reserved name, or a value that looks secret."""
    check_pass_env(values)
    for name, value in values.items():
        if is_secret_name(name) or redact(value, []) != value:  # redact(.., []): only the URL-password pattern
            raise ValueError(f"env: {name} looks like a secret; config values are stored with the run's parameters. "
                             f"Set it in the worker's environment and list it in pass_env instead")
    return dict(values)


def child_env(pass_env: Iterable[str] = (), env: Mapping[str, str] | None = None,
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """BASE_ENV and `pass_env` copied from `environ` (default os.environ) where set, then `env` on top."""
    source = os.environ if environ is None else environ
    names = dict.fromkeys([*BASE_ENV, *check_pass_env(pass_env)])
    result = {name: source[name] for name in names if name in source}
    result.update(env or {})
    return result
