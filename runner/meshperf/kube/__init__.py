"""The kubernetes platform: fortio in the client pod, pods and versions read from the API.

``KubernetesPlatform.from_options(opts)`` builds it; ``kube_usable(opts)`` tells
``--platform auto`` whether a cluster is reachable (2 s probe of ``/version``).
"""

from __future__ import annotations

from meshperf.kube.cluster import kube_usable
from meshperf.kube.platform import KubernetesPlatform

__all__ = ["KubernetesPlatform", "kube_usable"]
