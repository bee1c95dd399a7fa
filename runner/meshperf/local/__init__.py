"""The local platform: the two "pods" on loopback, with real Envoy sidecars and mTLS.

``platform.LocalPlatform`` is the entry point; ``envoy`` finds Envoy and renders its configs,
``certs`` makes the per-run CA and SPIFFE certificates, ``procs`` supervises processes,
``sampler`` measures their CPU and memory, ``perf`` records flame graphs. See docs/local.md.
"""
