"""Vector index benchmark: one table, one machine, one thread. See `twotower benchmark index --help`."""

import sys

from twotower.cli import app

if __name__ == "__main__":
    sys.exit(app(["benchmark", "index", *sys.argv[1:]], prog_name="benchmarks/index.py"))
