"""The flow behind tests/app/test_report_redaction.py, run as `python report_flows.py` in a fresh process (so no log
filter is installed unless the code under test installs it): the deploy bot's report, with a secret ($REPORT_TOKEN)
in its rows. Prints one JSON line: the flow run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: the app is not installed

from prefect import flow  # noqa: E402

from flows.deploy_pipeline import publish_report  # noqa: E402


@flow(name="redaction-report", persist_result=True)
def report_flow() -> str:
    secret = os.environ["REPORT_TOKEN"]
    return publish_report([{"step": "deploy backend", "detail": f"used {secret}", "by": "ci", "at": "",
                            "seconds": 1.0, "outcome": "ok"}], "deployed", f"done with {secret}")


if __name__ == "__main__":
    state = report_flow(return_state=True)
    print(json.dumps({"id": str(state.state_details.flow_run_id), "type": state.type.value}), flush=True)
