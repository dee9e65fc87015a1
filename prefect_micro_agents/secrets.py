"""Keep secrets out of prompts, threads, artifacts, stored results and logs: find them, and redact them wherever
data becomes durable or visible.

What counts as a secret (`secret_values`): every value registered with `register_secret`, the value of every
environment variable whose name contains KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL or AUTH, and the password
of every `scheme://user:password@host` URL held by an environment variable of ANY name (`MY_DB_URL`), so it is also
caught where it appears outside the URL. Standalone values shorter than `MIN_LENGTH` (8) characters are not treated
as secrets: they are too likely to appear innocently (and too weak to be real ones). Independently of any variable,
`redact` masks the password of every credentialed URL in the text by pattern, whatever its length.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import unquote

from pydantic import BaseModel

__all__ = [
    "MIN_LENGTH",
    "PROVIDER_KEY_VARS",
    "URL_MARKER",
    "is_model_credential",
    "is_secret_name",
    "redact",
    "redact_data",
    "redacted",
    "register_secret",
    "secret_values",
    "url_passwords",
]

MIN_LENGTH = 8
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
# scheme://user:password@host: the password runs to the last "@" before a "/", "?", "#" or whitespace (as urllib
# splits it); a password already replaced by a `[redacted:...]` marker is left alone.
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@\[\]]*:)(?!\[redacted)"
                              r"(?P<password>[^\s/?#]+)(?=@)")
URL_MARKER = "[redacted:url-password]"
_registered: dict[str, str] = {}

# The model's provider keys (litellm's variable names), this kit's settings and Prefect's own credentials: never
# handed to a deployed service or a deploy command (flows/targets/environment.py refuses them in `pass_env`).
# Cloud credentials a deploy may legitimately need (AWS_*, CLOUDFLARE_*, GITHUB_TOKEN) are not on the list.
PROVIDER_KEY_VARS = frozenset({
    "AI21_API_KEY", "ALEPH_ALPHA_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANYSCALE_API_KEY",
    "AZURE_API_KEY", "AZURE_OPENAI_API_KEY", "BASETEN_API_KEY", "CEREBRAS_API_KEY", "CODESTRAL_API_KEY",
    "COHERE_API_KEY", "CO_API_KEY", "DASHSCOPE_API_KEY", "DEEPINFRA_API_KEY", "DEEPSEEK_API_KEY",
    "FIREWORKSAI_API_KEY", "FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY", "FRIENDLIAI_API_KEY", "GEMINI_API_KEY",
    "GOOGLE_API_KEY", "GROQ_API_KEY", "HF_TOKEN", "HUGGINGFACE_API_KEY", "MISTRAL_API_KEY", "MOONSHOT_API_KEY",
    "NEBIUS_API_KEY", "NLP_CLOUD_API_KEY", "NOVITA_API_KEY", "NVIDIA_NIM_API_KEY", "OLLAMA_API_KEY",
    "OPENAI_API_KEY", "OPENROUTER_API_KEY", "PALM_API_KEY", "PERPLEXITYAI_API_KEY", "REPLICATE_API_KEY",
    "REPLICATE_API_TOKEN", "SAMBANOVA_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHER_API_KEY",
    "VOYAGE_API_KEY", "XAI_API_KEY",
})
_OWN_CREDENTIALS = frozenset({"PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"})
_OWN_PREFIXES = ("AGENT_", "LITELLM_")


def is_model_credential(name: str) -> bool:
    """A provider key, an AGENT_*/LITELLM_* setting or a Prefect credential: the agent's, never a deploy's."""
    upper = name.upper()
    return upper in PROVIDER_KEY_VARS or upper in _OWN_CREDENTIALS or upper.startswith(_OWN_PREFIXES)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (KEY, TOKEN, SECRET, PASSWORD, ...)."""
    return bool(_SECRET_NAME.search(name))


def register_secret(name: str, value: str) -> None:
    """Declare a secret that does not live in an environment variable (read from a file or a vault)."""
    if len(value) >= MIN_LENGTH:
        _registered[name] = value


def url_passwords(text: str) -> list[str]:
    """The passwords of the credentialed URLs in `text`, as written and percent-decoded."""
    found: list[str] = []
    for match in _URL_CREDENTIALS.finditer(text):
        password = match.group("password")
        found += [password] if unquote(password) == password else [password, unquote(password)]
    return found


def secret_values(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, value) of every secret known now (see the module docstring), longest value first."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {value: name for name, value in _registered.items()}
    for name, value in env.items():
        if is_secret_name(name) and len(value) >= MIN_LENGTH and not _is_plain(value):
            found.setdefault(value, name)
        if "://" in value:
            for password in url_passwords(value):
                if len(password) >= MIN_LENGTH:
                    found.setdefault(password, name)
    return sorted(((name, value) for value, name in found.items()), key=lambda item: -len(item[1]))


def _is_plain(value: str) -> bool:
    return value.lower() in {"true", "false", "none", "null"} or value.replace(".", "").isdigit()


def redact(text: str, secrets: Iterable[tuple[str, str]] | None = None) -> str:
    """Each known secret value -> `[redacted:<where it came from>]`; each URL password -> `[redacted:url-password]`."""
    for name, value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, f"[redacted:{name}]")
    return _URL_CREDENTIALS.sub(lambda m: m.group("head") + URL_MARKER, text) if "://" in text else text


def redact_data(value: Any, secrets: list[tuple[str, str]] | None = None) -> Any:
    """Redact every string inside a JSON-like value (dict keys included) or a pydantic model (same type back)."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, BaseModel):
        return type(value).model_validate(redact_data(value.model_dump(mode="json"), secrets))
    if isinstance(value, dict):
        return {redact(str(k), secrets): redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v, secrets) for v in value]
    return value


P = ParamSpec("P")
R = TypeVar("R")


def redacted(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a task's function so its return value is redacted INSIDE the task: what Prefect persists is exactly
    what the flow receives (redacting in a serializer instead would change a replayed thread's digest).

    A raised exception is redacted too (Prefect stores it with the failed state): its args, or, when its message
    comes from elsewhere, a RuntimeError carrying the redacted message in its place.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            secrets = secret_values()
            message = str(exc)
            if redact(message, secrets) == message:
                raise
            exc.args = tuple(redact_data(list(exc.args), secrets))
            if redact(str(exc), secrets) != str(exc):
                raise RuntimeError(f"{type(exc).__name__}: {redact(message, secrets)}") from None
            raise
        # cast: redact_data gives back the same shape (a str, the same model type, a dict, a list), except that a
        # tuple comes back as a list
        return cast(R, redact_data(result))

    return wrapper
