"""Function maps: generation from SBOMs, symbol normalisation, node hashes, scope (verifying
observations against a map is `coverage/`)."""
