"""Real SSH key pairs for the signed-approval tests (made by ssh-keygen, as an approver would)."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["allowed_signers", "keypair"]


def keypair(folder: Path, name: str) -> Path:
    """A new ed25519 key pair without a passphrase: <folder>/id_<name> and its .pub."""
    key = folder / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def allowed_signers(path: Path, **keys: Path) -> Path:
    """An allowed-signers file listing each principal (the approver's name) with their public key."""
    path.write_text("".join(f"{name} {key.with_suffix('.pub').read_text()}" for name, key in keys.items()))
    return path
