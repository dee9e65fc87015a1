"""Entry point of `python -m prefect_micro_agents.evals`."""

import sys

from prefect_micro_agents.evals.cli import main

sys.exit(main())
