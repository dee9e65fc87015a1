"""A tiny flow for tests/app/test_scale_stack.py: one persisted task result and a persisted flow result, which land in
the stack's result storage (the S3Bucket block named by PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK in the workers' env)."""

from __future__ import annotations

from prefect import flow, task


@task(persist_result=True)
def double(x: int) -> int:
    return 2 * x


@flow(persist_result=True)
def scale_smoke(x: int = 21) -> int:
    return double(x)
