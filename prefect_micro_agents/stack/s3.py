"""S3-compatible result storage: moto's S3 server (PyPI `moto[server]`) standing in for S3 on one machine, a bucket,
and Prefect's result storage configured the Prefect way: prefect-aws blocks, an `AwsCredentials` block with the
endpoint in its client parameters and an `S3Bucket` block (a WritableFileSystem, so Prefect persists results in it)
named by PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=s3-bucket/<name> in every worker's environment.

Why prefect-aws blocks rather than an fsspec `RemoteFileSystem("s3://...")`: the same two blocks point at AWS S3,
MinIO or any S3-compatible store by changing the endpoint and keys, the keys are stored as secret fields (the UI and
the API mask them), and no second S3 client (s3fs and aiobotocore) has to be configured on every worker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from prefect_micro_agents.stack.processes import Component

__all__ = ["LocalS3", "save_result_storage"]

HOST = "127.0.0.1"
NAME = "s3 (moto)"
REGION = "us-east-1"


class LocalS3:
    """moto's S3 server in `root` (log `moto.log`). Any key pair is accepted; `access_key`/`secret_key` are what the
    blocks store."""

    access_key = "microagents"
    secret_key = "microagents-secret"

    def __init__(self, root: Path, *, port: int, python: str | None = None,
                 progress: Callable[[str], None] | None = None, log_path: Path | None = None,
                 startup_timeout: float = 60.0) -> None:
        self.root = root.resolve()
        self.port = port
        self.python = python or sys.executable
        self.progress = progress
        self.startup_timeout = startup_timeout
        self.log_path = log_path or self.root / "moto.log"
        self.component: Component | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _answers(self) -> bool:
        with httpx.Client(timeout=2, trust_env=False) as http:
            return http.get(f"{self.endpoint_url}/").status_code == 200

    def start(self) -> LocalS3:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_", "MOTO_"))}
        env.update(PYTHONUNBUFFERED="1")
        self.component = Component(
            NAME, [self.python, "-m", "moto.server", "-H", HOST, "-p", str(self.port)], log_path=self.log_path,
            env=env, cwd=self.root, ready=self._answers, startup_timeout=self.startup_timeout,
            progress=self.progress)
        self.component.start()
        return self

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3  # type: ignore[import-untyped]  # no stubs; only here, for the bucket

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def create_bucket(self, bucket: str) -> None:
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()


def save_result_storage(*, block_name: str, bucket: str, folder: str, endpoint_url: str, access_key: str,
                        secret_key: str, region: str = REGION) -> str:
    """Save an `AwsCredentials` and an `S3Bucket` block (both named `block_name`) through this process's Prefect
    client; return the value for PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK (`s3-bucket/<block_name>`)."""
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket
    from pydantic import SecretStr

    credentials = AwsCredentials(
        aws_access_key_id=access_key,
        aws_secret_access_key=SecretStr(secret_key),
        region_name=region,
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url),
    )
    credentials.save(block_name, overwrite=True)
    storage = S3Bucket(bucket_name=bucket, bucket_folder=folder, credentials=credentials)
    storage.save(block_name, overwrite=True)
    return f"s3-bucket/{block_name}"
