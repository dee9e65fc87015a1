"""Serve the deploy pipeline as a deployment (`flow.serve`): the embedded default, no work pool or worker needed.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve            # deployment deploy-pipeline/local

Runs are started from the UI, `prefect deployment run deploy-pipeline/local -p sha=v1.2.0`, or the API; they
suspend while waiting for approvals and resume in a new process, so the server must be a persistent one.
"""

from __future__ import annotations

import argparse

__all__ = ["DEPLOYMENT_NAME", "main"]

DEPLOYMENT_NAME = "local"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help="deployment name (default: %(default)s)")
    args = parser.parse_args(argv)

    from flows.deploy_pipeline import deploy_pipeline

    deploy_pipeline.serve(name=args.name)


if __name__ == "__main__":
    main()
