"""The Tetragon bridge: Cilium Tetragon's events as signed evidence, policies from maps."""
