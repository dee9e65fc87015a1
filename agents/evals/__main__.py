"""Entry point of `python -m agents.evals`."""

import sys

from agents.evals.cli import main

sys.exit(main())
