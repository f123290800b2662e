"""stella-bundle: airgap-first runtime evidence (function maps, eBPF observations, offline bundles)."""

__version__ = "0.1.0"
