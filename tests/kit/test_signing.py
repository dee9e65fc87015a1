"""Signed approvals (prefect_micro_agents.signing) with the real ssh-keygen: what a signature covers, and every way a
signature that should not count fails to verify."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.signing import sign, signed_text, verify
from ssh_keys import allowed_signers, keypair

RUN, DIGEST = "5b0c6c2e-1111-4000-8000-000000000001", "ab" * 32


@pytest.fixture
def team(tmp_path: Path) -> tuple[Path, Path, Path]:
    alice, bob = keypair(tmp_path, "alice"), keypair(tmp_path, "bob")
    return alice, bob, allowed_signers(tmp_path / "allowed_signers", alice=alice, bob=bob)


def test_the_signed_text_covers_run_digest_decision_approver_feedback_and_edits() -> None:
    base = signed_text(RUN, DIGEST, "approve", "alice", "ok", {"receipt": "abc1234"})
    for other in (signed_text("other", DIGEST, "approve", "alice", "ok", {"receipt": "abc1234"}),
                  signed_text(RUN, "cd" * 32, "approve", "alice", "ok", {"receipt": "abc1234"}),
                  signed_text(RUN, DIGEST, "reject", "alice", "ok", {"receipt": "abc1234"}),
                  signed_text(RUN, DIGEST, "approve", "bob", "ok", {"receipt": "abc1234"}),
                  signed_text(RUN, DIGEST, "approve", "alice", "ok!", {"receipt": "abc1234"}),
                  signed_text(RUN, DIGEST, "approve", "alice", "ok", {"receipt": "abc1235"})):
        assert other != base
    assert signed_text(RUN, DIGEST, "approve", "alice") == signed_text(RUN, DIGEST, "approve", "alice", "", {})


def test_a_signature_verifies_only_for_its_text_its_signer_and_a_listed_key(team: tuple[Path, Path, Path],
                                                                           tmp_path: Path) -> None:
    alice, bob, allowed = team
    text = signed_text(RUN, DIGEST, "approve", "alice")
    signature = sign(text, alice)
    good = verify(text, signature, "alice", allowed)
    assert good.verified and 'Good "microagents-approval" signature for alice' in good.detail
    assert not verify(signed_text(RUN, DIGEST, "reject", "alice"), signature, "alice", allowed).verified
    assert not verify(text, signature, "bob", allowed).verified  # alice's key is not bob's
    assert not verify(text, sign(text, bob), "alice", allowed).verified  # bob signing as alice
    stranger = keypair(tmp_path, "mallory")
    assert not verify(text, sign(text, stranger), "alice", allowed).verified  # a key nobody listed
    git = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(alice), "-n", "git"], input=text,
                         capture_output=True, check=True).stdout.decode()
    assert not verify(text, git, "alice", allowed).verified  # another namespace: a git signature is not a decision
    revoked = allowed_signers(tmp_path / "revoked", bob=bob)
    assert not verify(text, signature, "alice", revoked).verified  # alice removed from the file


def test_missing_pieces_are_reported_not_verified(team: tuple[Path, Path, Path], tmp_path: Path) -> None:
    alice, _, allowed = team
    text = signed_text(RUN, DIGEST, "approve", "alice")
    assert verify(text, "", "alice", allowed).detail == "not signed"
    assert "no allowed-signers file is configured" in verify(text, sign(text, alice), "alice", None).detail
    assert "does not exist" in verify(text, sign(text, alice), "alice", tmp_path / "nope").detail
    with pytest.raises(ConfigurationError, match="no such key file"):
        sign(text, tmp_path / "id_nobody")
    (tmp_path / "not_a_key").write_text("hello")
    with pytest.raises(ConfigurationError, match="ssh-keygen could not sign"):
        sign(text, tmp_path / "not_a_key")
