"""Signed approvals (issue 14): identity Prefect's open-source server does not have, from the approver's SSH key.

Prefect's server records whatever name a resume carries. A decision may therefore carry a signature, made with the
approver's SSH key by `ssh-keygen -Y sign` (the mechanism git uses for signed commits) over a canonical text of
exactly what is decided: the flow run, the proposal's digest (the call as it stands: intent and arguments), the
decision, the approver's name, the feedback and any edits. The flow verifies it with `ssh-keygen -Y verify` against
the team's allowed-signers file (principal = the approver's name) before the approval counts. A signature made for
another run, another version of the call, another decision, other edits or by another key does not verify.

`microagents approve --sign KEY` signs from a terminal; an approval policy with `signed = true` counts only verified
approvals (an unsigned one from the UI is recorded as unverified, with why).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.thread import canonical_json

__all__ = ["ALLOWED_SIGNERS_ENV", "NAMESPACE", "Verification", "sign", "signed_text", "verify"]

NAMESPACE = "microagents-approval"  # ssh-keygen -n: a signature for git or anything else never verifies here
ALLOWED_SIGNERS_ENV = "AGENT_ALLOWED_SIGNERS"
_TIMEOUT_S = 20


def signed_text(run_id: str, proposal_digest: str, decision: str, approver: str, feedback: str = "",
                edits: dict[str, Any] | None = None) -> bytes:
    """What a signature covers: one canonical JSON text. `decision` is "approve" or "reject" (the form's words)."""
    return canonical_json({"namespace": NAMESPACE, "run": str(run_id), "proposal_digest": proposal_digest,
                           "decision": decision, "approver": approver, "feedback": feedback,
                           "edits": edits or {}}).encode()


def _ssh_keygen(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["ssh-keygen", *args], input=data, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise ConfigurationError("ssh-keygen is not installed (OpenSSH 8.2 or later signs and verifies approvals)") \
            from None


def sign(text: bytes, key: str | os.PathLike[str]) -> str:
    """An armored SSH signature of `text` by the private key at `key` (or its public key, when the private key is in
    ssh-agent). Raises ConfigurationError with ssh-keygen's reason when it cannot sign."""
    path = Path(key).expanduser()
    if not path.exists():
        raise ConfigurationError(f"--sign {path}: no such key file")
    done = _ssh_keygen(["-q", "-Y", "sign", "-f", str(path), "-n", NAMESPACE], text)
    if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
        raise ConfigurationError(f"ssh-keygen could not sign with {path}: "
                                 f"{done.stderr.decode(errors='replace').strip()[:300] or done.returncode}")
    return done.stdout.decode()


@dataclass(frozen=True)
class Verification:
    verified: bool
    detail: str  # ssh-keygen's own line on success ("Good signature for alice with ED25519 key SHA256:..."), or why


def verify(text: bytes, signature: str, principal: str, allowed_signers: Path | None) -> Verification:
    """Whether `signature` is `principal`'s signature of `text` by a key the allowed-signers file lists for them."""
    if not signature.strip():
        return Verification(False, "not signed")
    if allowed_signers is None:
        return Verification(False, f"no allowed-signers file is configured (approvers file `allowed_signers`, or "
                                   f"{ALLOWED_SIGNERS_ENV})")
    if not allowed_signers.is_file():
        return Verification(False, f"allowed-signers file {allowed_signers} does not exist")
    with tempfile.TemporaryDirectory(prefix="microagents-sig-") as tmp:
        sig = Path(tmp) / "decision.sig"
        sig.write_text(signature.strip() + "\n")
        done = _ssh_keygen(["-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", NAMESPACE,
                            "-s", str(sig)], text)
    said = " ".join((done.stdout + done.stderr).decode(errors="replace").split())[:300]
    if done.returncode == 0:
        return Verification(True, said)
    return Verification(False, f"signature does not verify for {principal}: {said or 'refused by ssh-keygen'}")
