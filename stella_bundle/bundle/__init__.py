"""Offline bundles: reproducible build, hostile-archive-safe reading, manifest, media split/join,
the offline verification pipeline and its reports."""
