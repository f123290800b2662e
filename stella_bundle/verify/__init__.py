"""Offline bundle verification: DESIGN's named steps in order (`steps`) over one streaming pass of
the archive (`pipeline`): trust root, archive, manifest signature, file list, schemas,
function-map signature, evidence chains (`chains`, the record pass `records`, parallel chunk work
`chunkwork`), coverage (`coverage`, the tally fed to `stella_bundle.coverage`). It reads archives
with `bundle/` (reader, layout, manifest, the merged observations view, stream helpers); `bundle/`
never imports this folder.

Entry point: `verify_bundle(archive, trust_root, ...)` → `VerificationOutcome`."""

from .pipeline import VerificationOutcome, VerifyLimits, verify_bundle

__all__ = ["VerificationOutcome", "VerifyLimits", "verify_bundle"]
