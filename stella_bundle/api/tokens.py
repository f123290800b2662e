"""API bearer tokens: scopes, the tokens file (hashes only) and the check of a presented token.

A token is 256 random bits (`stella_` + URL-safe base64), shown once when made. The file keeps
its SHA-256, never the token. A slow password hash (scrypt, argon2) protects low-entropy human
passwords against guessing; a 256-bit random token cannot be guessed from its SHA-256, and a
slow hash on every request would cost tens of milliseconds each (the API's p99 target is
100 ms). Hashes are compared in constant time.

File (`tokens.json`, written atomically, mode 0600):

    {"version": 1, "tokens": [{"name": "ci", "sha256": "<hex>", "scopes": ["write"],
                               "created_at": "2026-…Z"}]}

Scopes are ordered: `admin` includes `write`, `write` includes `read`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..configfile import read_json_config, refuse_unknown_keys
from ..digests import SHA256_HEX_RE
from ..errors import ConfigError, MalformedDocumentError
from ..formats.flat import read_flat, read_list
from ..fsutil import write_bytes_atomic
from ..timeutil import format_timestamp, utc_now

SCOPES: Final = ("read", "write", "admin")
_RANK: Final = {name: rank for rank, name in enumerate(SCOPES)}
TOKEN_PREFIX: Final = "stella_"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
FILE_VERSION: Final = 1


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def grants(held: tuple[str, ...], needed: str) -> bool:
    """Whether scopes `held` allow an operation that needs `needed`."""
    return any(_RANK[scope] >= _RANK[needed] for scope in held)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    scopes: tuple[str, ...]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class _ListedFields:
    name: str
    scopes: list[str]
    created_at: str


@dataclass(frozen=True)
class TokenListing:
    """What `serve token list` prints: each token's name, scopes and creation time, never its
    digest (nor the token: it is not kept)."""

    entries: tuple[TokenEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": [
                {key: value for key, value in entry.to_dict().items() if key != "sha256"}
                for entry in self.entries
            ]
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> TokenListing:
        if not isinstance(data, dict) or set(data) != {"tokens"}:
            raise MalformedDocumentError(
                "expected an object of tokens", path=source, field="tokens"
            )
        entries = []
        for index, item in enumerate(read_list(data["tokens"], source, "tokens")):
            values = read_flat(_ListedFields, item, source, f"tokens[{index}]")
            check_scopes(values["scopes"], f"tokens[{index}].scopes", str(source))
            # The digest is never shown: an empty one stands for it.
            entries.append(
                TokenEntry(values["name"], "", tuple(values["scopes"]), values["created_at"])
            )
        return cls(tuple(entries))


def check_scopes(scopes: list[str] | tuple[str, ...], field: str, source: str | None) -> None:
    if not scopes:
        raise ConfigError(f"expected at least one of {', '.join(SCOPES)}", path=source, field=field)
    for scope in scopes:
        if scope not in SCOPES:
            raise ConfigError(
                f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}",
                path=source,
                field=field,
            )


_FILE_KEYS: Final = frozenset({"version", "tokens"})
_ENTRY_KEYS: Final = frozenset({"name", "sha256", "scopes", "created_at"})


class TokenFile:
    """The tokens the server accepts, as loaded from (and saved to) the tokens file."""

    def __init__(self, entries: list[TokenEntry] | None = None, path: Path | None = None) -> None:
        self.entries = list(entries or [])
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> TokenFile:
        source = str(path)
        document = read_json_config(path)
        if not isinstance(document, dict) or document.get("version") != FILE_VERSION:
            raise ConfigError(
                f"expected a tokens file with version {FILE_VERSION}", path=source, field="version"
            )
        refuse_unknown_keys(document, _FILE_KEYS, source, "")
        items = document.get("tokens")
        if not isinstance(items, list):
            raise ConfigError("expected a list", path=source, field="tokens")
        entries: list[TokenEntry] = []
        for index, item in enumerate(items):
            where = f"tokens[{index}]"
            if not isinstance(item, dict):
                raise ConfigError("expected an object", path=source, field=where)
            # A key the server does not read (`expires_at`, a misspelt `scope`) would be a
            # promise it does not keep.
            refuse_unknown_keys(item, _ENTRY_KEYS, source, f"{where}.")
            name, digest, scopes = item.get("name"), item.get("sha256"), item.get("scopes")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise ConfigError("expected a token name", path=source, field=f"{where}.name")
            if not isinstance(digest, str) or not SHA256_HEX_RE.match(digest):
                raise ConfigError(
                    "expected 64 lowercase hex digits", path=source, field=f"{where}.sha256"
                )
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise ConfigError("expected a list of scopes", path=source, field=f"{where}.scopes")
            check_scopes(scopes, f"{where}.scopes", source)
            if any(e.name == name for e in entries):
                raise ConfigError(f"token name {name!r} appears twice", path=source, field=where)
            created_at = item.get("created_at", "")
            if not isinstance(created_at, str):
                raise ConfigError(
                    f"expected a time string, got {created_at!r}",
                    path=source,
                    field=f"{where}.created_at",
                )
            entries.append(TokenEntry(name, digest, tuple(scopes), created_at))
        return cls(entries, Path(path))

    def save(self, path: str | Path | None = None) -> None:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ConfigError("no tokens file to write", field="--tokens")
        document = {"version": FILE_VERSION, "tokens": [e.to_dict() for e in self.entries]}
        data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        write_bytes_atomic(target, data, mode=0o600)

    def add(self, name: str, scopes: list[str]) -> str:
        """A new token named `name` with `scopes`; returns the token (shown once, not stored)."""
        if not _NAME_RE.match(name):
            raise ConfigError(
                "expected 1-64 characters of A-Z a-z 0-9 . _ @ - starting with a letter or digit",
                field="--name",
            )
        if any(e.name == name for e in self.entries):
            raise ConfigError(f"a token named {name!r} exists already", field="--name")
        check_scopes(scopes, "--scope", None)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.entries.append(
            TokenEntry(name, token_digest(token), tuple(scopes), format_timestamp(utc_now()))
        )
        return token

    def remove(self, name: str) -> None:
        kept = [e for e in self.entries if e.name != name]
        if len(kept) == len(self.entries):
            raise ConfigError(f"no token named {name!r}", field="--name")
        self.entries = kept

    def authenticate(self, token: str) -> TokenEntry | None:
        """The entry whose hash matches `token` (every entry compared: constant time)."""
        digest = token_digest(token)
        found = None
        for entry in self.entries:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found
