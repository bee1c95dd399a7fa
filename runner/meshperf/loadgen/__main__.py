"""``python -m meshperf.loadgen``: the same command line as ``runner/loadgen.py``."""

from meshperf.errors import exit_cli
from meshperf.loadgen.cli import main

if __name__ == "__main__":
    exit_cli(main)
