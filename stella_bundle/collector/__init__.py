"""eBPF collection: precompiled CO-RE probes, the airgap loader, kernel features, the loop."""
