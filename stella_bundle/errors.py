"""One exception hierarchy for the whole toolkit; the CLI maps each branch to an exit code.

Exit codes: 0 ok, 1 verification said no (:class:`VerificationFailure`), 2 bad input or usage
(:class:`InputError`), 3 internal error (:class:`InternalError` and anything unexpected).
"""

from __future__ import annotations

import sys
from pathlib import Path


class StellaError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        self.field = field
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: where (file, line, column, field) and what was expected."""
        where = ""
        if self.path is not None:
            where = _printable(clipped(self.path, 300))
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        if self.field is not None:
            where += f"field '{_printable(clipped(self.field, 300))}': "
        # A message quoting a value of the input (`got {value!r}`) is bounded too: a 3 MB
        # string where a number belongs made a 3 MB error line.
        return where + clipped(self.message, MESSAGE_LIMIT)


# The longest message an error line carries (the longest the toolkit writes, a list of the
# keys allowed, is a few hundred characters).
MESSAGE_LIMIT = 2000


def clipped(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters with an ellipsis: a name or value from hostile input
    (a 1 MiB pax path, a huge key) is echoed in an error line, not copied into it whole."""
    return text if len(text) <= limit else text[:limit] + "…"


def _printable(text: str) -> str:
    """A path or field name from the input may hold a newline or other control characters
    (an unknown key of a record): escaped, so that the error stays on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- exit code 2: bad input or usage -------------------------------------------------------


class InputError(StellaError):
    """The input is unusable: missing, unreadable, malformed or of the wrong kind."""

    exit_code = 2


class MalformedDocumentError(InputError):
    """A file is not valid JSON / NDJSON / YAML, or not the document kind expected."""


class SchemaValidationError(InputError):
    """A document does not conform to its JSON Schema."""


class KeyFileError(InputError):
    """A key file cannot be read, decrypted or understood."""


class TrustRootError(InputError):
    """A trust root file is malformed or inconsistent."""


class UnsupportedError(InputError):
    """The input is well-formed but uses a feature this toolkit does not support."""


class ArchiveError(InputError):
    """An archive is hostile or malformed; refused before anything is written."""


class ConfigError(InputError):
    """A configuration file or option is invalid. A field of a configuration file read by
    `configfile` is placed at its line and column there."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        column: int | None = None,
    ) -> None:
        # sys.modules, not an import: no file was read through it unless it is loaded.
        configfile = sys.modules.get("stella_bundle.configfile")
        if configfile is not None and path is not None and field is not None and line is None:
            place = configfile.place_of(str(path), field)
            if place is not None:
                line, column = place
        super().__init__(message, path=path, line=line, field=field, column=column)


class CollectorEnvironmentError(InputError):
    """This host cannot run the eBPF collector as asked (capability, tracefs, symbol, kernel)."""


class DiskFullError(InputError):
    """No space left while writing evidence; what was sealed before stays intact."""


class ChainBusyError(InputError):
    """Another writer holds the evidence chain (one writer per chain at a time)."""


# --- exit code 1: verification said no ------------------------------------------------------


class VerificationFailure(StellaError):
    """The evidence was examined and did not pass."""

    exit_code = 1


class SignatureError(VerificationFailure):
    """No trusted key verified a signature (tampered payload, wrong key, bad signature)."""


class ThresholdNotMetError(VerificationFailure):
    """Fewer distinct trusted keys signed than the role's threshold requires."""


class RoleError(VerificationFailure):
    """The signing key is trusted, but not for the role this document needs."""


class PayloadTypeError(VerificationFailure):
    """The DSSE payloadType is not the one expected."""


class StatementError(VerificationFailure):
    """The signed payload is not a well-formed in-toto Statement of the expected type."""


class SubjectDigestMismatchError(VerificationFailure):
    """A statement's subject digest does not match the artifact."""


class ExpiredTrustRootError(VerificationFailure):
    """The trust root's `expires` date has passed."""


class SigstoreVerificationError(VerificationFailure):
    """A Sigstore bundle failed offline verification."""


class ProbeIntegrityError(VerificationFailure):
    """A probe object's sha256 is not the one its lock file records (the airgap loader refuses)."""


class BundleContentsError(VerificationFailure):
    """A bundle's files and its signed manifest disagree (unlisted, missing or altered file)."""


class EvidenceChainError(VerificationFailure):
    """An evidence chain does not reconstruct: gap, reorder, broken link, bad content digest."""


class CoverageNotMetError(VerificationFailure):
    """The evidence was valid but did not meet the function map's coverage targets."""


class PartIntegrityError(VerificationFailure):
    """A media part of a split bundle is missing, truncated or altered."""


# --- exit code 3: our fault ------------------------------------------------------------------


class InternalError(StellaError):
    """A bug or an environment failure that is not the input's fault."""

    exit_code = 3
