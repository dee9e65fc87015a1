"""A flow whose task uses the execution ledger as run_agent's execute task does, configured only the Prefect way:
the flow's result storage (a RemoteFileSystem block saved on the server) and AGENT_LOCK_MANAGER with prefect-redis's
messaging settings from the environment. Prints what the ledger resolved, as JSON.

Usage: python ledger_flow.py <storage root> <key>
"""

from __future__ import annotations

import json
import sys
from typing import Any

from prefect import flow, task
from prefect.filesystems import RemoteFileSystem

from prefect_micro_agents.adapter.ledger import ExecutionLedger


@task
def begin_twice(key: str) -> dict[str, Any]:
    ledger = ExecutionLedger()
    first, second = ledger.begin(key)[0], ledger.begin(key)[0]
    return {"first": first, "second": second, "locks": type(ledger.locks).__name__,
            "storage": type(ledger.storage).__name__, "started": ledger.paths(key)[0]}


@flow
def ledger_flow(key: str) -> dict[str, Any]:
    return begin_twice(key)


if __name__ == "__main__":
    root, key = sys.argv[1], sys.argv[2]
    RemoteFileSystem(basepath="dir://records", settings={"path": root, "target_protocol": "file"}).save(
        "ledger-test", overwrite=True)
    print(json.dumps(ledger_flow.with_options(result_storage="remote-file-system/ledger-test")(key)))
