"""Keys, in-toto statements, DSSE envelopes, trust roots and offline Sigstore verification."""
