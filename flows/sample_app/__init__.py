"""A small two-service sample app in a local git repo, so the deploy bot has something real to deploy."""

from __future__ import annotations

from flows.sample_app.generator import (
    MANIFEST_NAME,
    SampleAppError,
    SampleAppManifest,
    SampleCommit,
    create_sample_app,
    load_manifest,
)

__all__ = ["MANIFEST_NAME", "SampleAppError", "SampleAppManifest", "SampleCommit", "create_sample_app", "load_manifest"]
