"""The kubernetes platform: fortio in the client pod, pods and versions read from the API.

``KubernetesPlatform.from_options(opts)`` builds it. Whether ``--platform auto`` picks it is
decided by ``meshperf.choose`` before this package (and the slow ``kubernetes`` client) is
imported.
"""

from __future__ import annotations

from meshperf.kube.platform import KubernetesPlatform

__all__ = ["KubernetesPlatform"]
