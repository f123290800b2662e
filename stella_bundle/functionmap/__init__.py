"""Function maps: generation from SBOMs, symbol normalisation, node hashes, verification."""
