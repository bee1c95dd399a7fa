"""Stand-in for an external command (kubectl, istioctl, helm, linkerd, gcloud, kind, curl).

The set-up script tests put a wrapper named after the command on PATH that runs
``stub.py NAME ARGS...``. Every call is appended to ``$STUB_LOG`` as one JSON line
``{"cmd": NAME, "argv": [...], "stdin": "..."}``; nothing else happens unless a rule in the JSON
file ``$STUB_RULES`` matches. Rules are tried in order; the first whose ``cmd`` equals NAME and
whose ``args`` all occur in argv applies:

    {"cmd": "kubectl", "args": ["get", "nodes"], "stdout": "10.0.0.0/24", "rc": 0}
    {"cmd": "curl", "args": ["https://x/y.tar.gz"], "copy_to_o": "/path/of/the/file"}

``copy_to_o`` copies a local file to the path given after ``-o`` (downloads without network).
``sleep`` makes the call hang that many seconds first (a hung API server); a call that was not
killed before it woke up appends its argv to ``$STUB_LOG.woke``.
Standard library only: it also runs under the restricted PATH of the missing-tool tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any


def _rules() -> list[dict[str, Any]]:
    path = os.environ.get("STUB_RULES")
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        rules: list[dict[str, Any]] = json.load(f)
    return rules


def main(argv: list[str]) -> int:
    name, args = argv[0], argv[1:]
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    log = os.environ["STUB_LOG"]
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"cmd": name, "argv": args, "stdin": stdin}) + "\n")
    for rule in _rules():
        if rule.get("cmd") != name or not all(a in args for a in rule.get("args", [])):
            continue
        if "sleep" in rule:
            time.sleep(float(rule["sleep"]))
            with open(log + ".woke", "a", encoding="utf-8") as f:
                f.write(json.dumps({"cmd": name, "argv": args}) + "\n")
        if "copy_to_o" in rule:
            shutil.copyfile(rule["copy_to_o"], args[args.index("-o") + 1])
        sys.stdout.write(rule.get("stdout", ""))
        sys.stderr.write(rule.get("stderr", ""))
        return int(rule.get("rc", 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
