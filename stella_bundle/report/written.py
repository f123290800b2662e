"""The table views of what the writing commands print (formats/written.py): the lines these
commands have always printed, now read from their typed result."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from ..formats.written import (
    BundleBuilt,
    BundleJoined,
    BundleSplit,
    KeyGenerated,
    StatementSigned,
    TokenIssued,
    TokenRemoved,
    TrustRootWritten,
)


def key_generated_table(result: KeyGenerated) -> RenderableType:
    mode = "mode 0600, encrypted" if result.encrypted else "mode 0600"
    return Group(
        Text(f"private key: {result.private_key} ({mode})"),
        Text(f"public key:  {result.public_key}"),
        Text(f"keyid:       {result.keyid}"),
        Text(f"fingerprint: {result.fingerprint_sha256}"),
    )


def trust_root_written_table(result: TrustRootWritten) -> RenderableType:
    if result.change == "add-key":
        return Text(f"added {result.keyid} to {', '.join(result.roles)} in {result.path}")
    if result.change == "set-sigstore":
        return Text(
            f"embedded {result.sigstore_trusted_root} with {result.sigstore_identities} "
            f"identities in {result.path}"
        )
    return Text(f"wrote {result.path} (expires {result.expires})")


def statement_signed_table(result: StatementSigned) -> RenderableType:
    return Text(
        f"signed {result.input} as {result.predicate_type} by {', '.join(result.keyids)} "
        f"→ {result.envelope}"
    )


def bundle_built_table(result: BundleBuilt) -> RenderableType:
    return Text(
        f"built {result.bundle} ({result.size} bytes, sha256 {result.sha256}): "
        f"{result.files} files, services {', '.join(result.services)}, "
        f"{len(result.chains)} chain(s), {result.records} records"
    )


def bundle_split_table(result: BundleSplit) -> RenderableType:
    signed = f", signed {result.signed_index}" if result.signed_index else ""
    return Text(
        f"{len(result.parts)} part(s) of at most {result.part_size} bytes; "
        f"index {result.index}{signed}"
    )


def bundle_joined_table(result: BundleJoined) -> RenderableType:
    return Text(
        f"joined {len(result.checked) + len(result.reused)} part(s) into {result.bundle} "
        f"({result.size} bytes, sha256 {result.sha256}); checked {len(result.checked)}, "
        f"reused {len(result.reused)} verified earlier"
    )


def token_issued_table(result: TokenIssued) -> RenderableType:
    # The token alone on its line, as before: scripts read it with $(stella serve token add …).
    return Text(result.token)


def token_removed_table(result: TokenRemoved) -> RenderableType:
    return Text(
        f"removed token {result.name} from {result.tokens} (a running server keeps it until "
        "restarted)"
    )
