"""Open Bandit benchmark: the same as `twotower benchmark open-bandit` (see its --help).

    .venv/bin/python benchmarks/open_bandit.py [--train-policy bts] [--eval-policy random] [--clip 100]
"""

import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from twotower.cli import app

if __name__ == "__main__":
    sys.exit(app(["benchmark", "open-bandit", *sys.argv[1:]], prog_name="benchmarks/open_bandit.py"))
