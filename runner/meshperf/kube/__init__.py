"""The kubernetes platform: fortio in the client pod, pods and versions read from the API.

``KubernetesPlatform.from_options(opts)`` builds it. Whether ``--platform auto`` picks it is
decided by ``meshperf.choose`` before the slow ``kubernetes`` client is imported; the platform
is imported on first use, so ``meshperf.kube.paths`` (the mesh x mode table the plan reads)
costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshperf.kube.platform import KubernetesPlatform

__all__ = ["KubernetesPlatform"]


def __getattr__(name: str) -> Any:
    if name == "KubernetesPlatform":
        from meshperf.kube.platform import KubernetesPlatform

        return KubernetesPlatform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
