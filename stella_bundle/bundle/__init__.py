"""Offline bundles: reproducible build, hostile-archive-safe reading, manifest, layout, the merged
observations view, media split/join (verifying a bundle is `verify/`)."""
