"""CLI: `python -m flows.sample_app create <dir>` creates the sample repo and prints its manifest as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from flows.sample_app.generator import SampleAppError, create_sample_app

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, create the repo, print the manifest (named commit SHAs) on stdout."""
    parser = argparse.ArgumentParser(prog="python -m flows.sample_app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create the sample git repo (no-op if it already exists there)")
    create.add_argument("dir", help="missing or empty directory, or an existing sample repo")
    args = parser.parse_args(argv)
    try:
        manifest = create_sample_app(args.dir)
    except SampleAppError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(manifest.model_dump(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
