"""The trust root an auditor brings (schemas/trust-root.schema.json).

Defined in `attest/trustroot.py`, next to the keys and the verifier that use it.
"""

from __future__ import annotations

from ..attest.trustroot import (
    ROLES,
    TRUST_ROOT_TYPE,
    Role,
    SigstoreIdentity,
    SigstoreTrust,
    TrustRoot,
)

__all__ = ["ROLES", "TRUST_ROOT_TYPE", "Role", "SigstoreIdentity", "SigstoreTrust", "TrustRoot"]
