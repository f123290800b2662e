"""The trust root an auditor brings to the air-gapped side (DESIGN.md §4 "Trust root").

A small data model with exact `from_dict`/`to_dict`: public keys by keyid, four roles with
keyids and threshold, an expiry, and optionally a Sigstore `trusted_root.json` with the
identity/issuer pairs allowed to sign. A key embedded in a bundle is never trusted for being
there: only keys listed here are.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.signer import SSlibKey

from ..canonical import MAX_SAFE_INTEGER
from ..digests import SHA256_HEX_RE
from ..errors import ExpiredTrustRootError, KeyFileError, TrustRootError
from ..jsonio import load_json_object, write_canonical_json
from ..timeutil import format_timestamp, is_rfc3339_timestamp, parse_timestamp
from .public_key import key_material, public_key_from_dict
from .roles import ROLES

TRUST_ROOT_TYPE = "https://stella.ops/trust-root/v1"


@dataclass
class Role:
    keyids: list[str] = field(default_factory=list)
    threshold: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"keyids": list(self.keyids), "threshold": self.threshold}


@dataclass(frozen=True)
class SigstoreIdentity:
    identity: str
    issuer: str

    def to_dict(self) -> dict[str, str]:
        return {"identity": self.identity, "issuer": self.issuer}


@dataclass
class SigstoreTrust:
    trusted_root: dict[str, Any]
    identities: list[SigstoreIdentity] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trusted_root": self.trusted_root,
            "identities": [i.to_dict() for i in self.identities],
        }


@dataclass
class TrustRoot:
    expires: dt.datetime
    keys: dict[str, SSlibKey] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=lambda: {name: Role() for name in ROLES})
    sigstore: SigstoreTrust | None = None
    version: int = 1
    # The file it was loaded from, so errors about the trust root name it (not serialised).
    source: str | None = field(default=None, compare=False)

    # --- serialisation ------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> TrustRoot:
        """Strict parse; TrustRootError names the field at fault."""
        reader = _Reader(source)
        if not isinstance(data, dict):
            raise reader.fail("expected a trust root object")
        if data.get("_type") != TRUST_ROOT_TYPE:
            raise reader.fail(
                f"not a stella trust root (expected _type {TRUST_ROOT_TYPE!r})", "_type"
            )
        reader.known(data, ("_type", "version", "expires", "keys", "roles", "sigstore"), "")
        for required in ("version", "expires", "keys", "roles"):
            if required not in data:
                raise reader.fail("required field is missing", required)
        version = reader.bounded(data["version"], "version", "a positive integer")
        if not is_rfc3339_timestamp(data["expires"]):
            raise reader.fail("expected an RFC 3339 timestamp", "expires")
        keys = reader.keys(data["keys"])
        sigstore = data.get("sigstore")
        return cls(
            expires=parse_timestamp(data["expires"]),
            keys=keys,
            roles=reader.roles(data["roles"], keys),
            sigstore=None if sigstore is None else reader.sigstore(sigstore),
            version=version,
        )

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "_type": TRUST_ROOT_TYPE,
            "version": self.version,
            "expires": format_timestamp(self.expires),
            "keys": {keyid: key.to_dict() for keyid, key in sorted(self.keys.items())},
            "roles": {name: role.to_dict() for name, role in sorted(self.roles.items())},
        }
        if self.sigstore is not None:
            document["sigstore"] = self.sigstore.to_dict()
        return document

    @classmethod
    def load(cls, path: str | Path) -> TrustRoot:
        root = cls.from_dict(load_json_object(path, "a trust root object"), path)
        root.source = str(path)
        return root

    def save(self, path: str | Path) -> None:
        write_canonical_json(path, self.to_dict())

    # --- queries --------------------------------------------------------------------------

    def check_not_expired(self, now: dt.datetime | None = None, source: str | None = None) -> None:
        now = now or dt.datetime.now(dt.UTC)
        if now >= self.expires:
            raise ExpiredTrustRootError(
                f"trust root expired at {format_timestamp(self.expires)}; obtain a current one "
                "from its owner and compare its fingerprints out of band",
                path=self.source or source,
                field="expires",
            )

    def role(self, name: str) -> Role:
        if name not in ROLES:
            raise TrustRootError(f"unknown role {name!r}; expected one of {', '.join(ROLES)}")
        return self.roles[name]

    def role_keys(self, name: str) -> list[SSlibKey]:
        return [self.keys[keyid] for keyid in self.role(name).keyids]

    def roles_of(self, keyid: str) -> list[str]:
        return [name for name, role in sorted(self.roles.items()) if keyid in role.keyids]

    def add_key(self, key: SSlibKey, roles: list[str], threshold: int | None = None) -> None:
        self.keys[key.keyid] = key
        for name in roles:
            role = self.role(name)
            if key.keyid not in role.keyids:
                role.keyids.append(key.keyid)
            if threshold is not None:
                role.threshold = threshold


class _Reader:
    """The checks of `TrustRoot.from_dict`, part by part; each error names the field."""

    def __init__(self, source: str | Path | None) -> None:
        self.source = source

    def fail(self, message: str, field_name: str | None = None) -> TrustRootError:
        return TrustRootError(message, path=self.source, field=field_name)

    def known(self, data: dict[str, Any], known: tuple[str, ...], where: str) -> None:
        """Unknown fields are refused, as by every format model (see stella_bundle/formats)."""
        extra = sorted(data.keys() - set(known))
        if extra:
            raise self.fail("unknown field", where + extra[0])

    def bounded(self, value: Any, where: str, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"expected {what} (at most 2**53 - 1)", where)
        if not 1 <= value <= MAX_SAFE_INTEGER:
            raise self.fail(f"expected {what} (at most 2**53 - 1)", where)
        return value

    def text(self, data: dict[str, Any], name: str, where: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise self.fail("expected a non-empty string", where + name)
        return value

    def keys(self, data: Any) -> dict[str, SSlibKey]:
        if not isinstance(data, dict):
            raise self.fail("expected an object of public keys by keyid", "keys")
        keys: dict[str, SSlibKey] = {}
        keyid_of_material: dict[bytes, str] = {}
        for keyid, key_dict in data.items():
            key = self.key(keyid, key_dict)
            try:
                material = key_material(key)
            except KeyFileError as exc:
                raise self.fail(exc.message, f"keys.{keyid}") from exc
            if material in keyid_of_material:
                # Two keyids for one key would let one signature count twice toward a threshold.
                raise self.fail(
                    f"keyids {keyid_of_material[material]} and {keyid} are the same public key "
                    "written two ways; list each key once",
                    f"keys.{keyid}",
                )
            keyid_of_material[material] = keyid
            keys[keyid] = key
        return keys

    def key(self, keyid: str, data: Any) -> SSlibKey:
        where = f"keys.{keyid}"
        if not SHA256_HEX_RE.match(keyid):
            raise self.fail("expected a keyid: 64 lowercase hex digits", where)
        if not isinstance(data, dict):
            raise self.fail("expected a public key object", where)
        self.known(data, ("keytype", "scheme", "keyval"), where + ".")
        self.text(data, "keytype", where + ".")
        self.text(data, "scheme", where + ".")
        keyval = data.get("keyval")
        if not isinstance(keyval, dict):
            raise self.fail("expected an object with the public key", where + ".keyval")
        self.known(keyval, ("public",), where + ".keyval.")
        self.text(keyval, "public", where + ".keyval.")
        return public_key_from_dict({**data, "keyid": keyid}, self.source)

    def roles(self, data: Any, keys: dict[str, SSlibKey]) -> dict[str, Role]:
        if not isinstance(data, dict):
            raise self.fail("expected an object of roles", "roles")
        roles = {name: self.role(name, role, keys) for name, role in data.items()}
        for name in ROLES:
            roles.setdefault(name, Role())
        return roles

    def role(self, name: str, data: Any, keys: dict[str, SSlibKey]) -> Role:
        where = f"roles.{name}"
        if name not in ROLES:
            raise self.fail(f"unknown role; expected one of {', '.join(ROLES)}", where)
        if not isinstance(data, dict) or not {"keyids", "threshold"} <= data.keys():
            raise self.fail("expected an object with keyids and threshold", where)
        self.known(data, ("keyids", "threshold"), where + ".")
        keyids = data["keyids"]
        if not isinstance(keyids, list) or not all(
            isinstance(k, str) and SHA256_HEX_RE.match(k) for k in keyids
        ):
            raise self.fail("expected a list of keyids", where + ".keyids")
        threshold = self.bounded(data["threshold"], where + ".threshold", "an integer >= 1")
        for keyid in keyids:
            if keyid not in keys:
                raise self.fail(f"keyid {keyid} is not among the trust root's keys", where)
        if keyids and threshold > len(set(keyids)):
            raise self.fail(
                f"threshold {threshold} exceeds the {len(set(keyids))} keys of the role",
                where + ".threshold",
            )
        return Role(list(keyids), threshold)

    def sigstore(self, data: Any) -> SigstoreTrust:
        if not isinstance(data, dict) or not isinstance(data.get("trusted_root"), dict):
            raise self.fail("expected an object with a 'trusted_root' object", "sigstore")
        self.known(data, ("trusted_root", "identities"), "sigstore.")
        listed = data.get("identities", [])
        if not isinstance(listed, list):
            raise self.fail("expected a list of {identity, issuer}", "sigstore.identities")
        identities = []
        for index, item in enumerate(listed):
            where = f"sigstore.identities[{index}]"
            if not isinstance(item, dict) or not {"identity", "issuer"} <= item.keys():
                raise self.fail("expected {identity, issuer}", where)
            self.known(item, ("identity", "issuer"), where + ".")
            identities.append(
                SigstoreIdentity(
                    self.text(item, "identity", where + "."), self.text(item, "issuer", where + ".")
                )
            )
        return SigstoreTrust(data["trusted_root"], identities)
