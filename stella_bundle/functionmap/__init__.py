"""Function maps: generation from SBOMs and binaries, and loading a signed map from disk (the
predicate's model, node hashes and scope are `formats/`; verifying observations against a map
is `coverage/`)."""
