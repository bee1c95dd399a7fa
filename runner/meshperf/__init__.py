"""meshperf: measure what a service mesh's data plane costs.

The library behind ``runner/runner.py``, ``runner/fortio.py``, ``runner/graph.py`` and
``runner/loadgen.py``. Every CLI is a thin wrapper over functions here, so all of it can be
driven from Python.
"""

__version__ = "0.1.0"
