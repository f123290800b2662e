"""The bridge's privacy filter: what of a Tetragon event may reach signed evidence.

Safe by default: stack frames become `module + offset` (raw addresses never kept), function
arguments are dropped unless their label is allowed, and argv and paths are redacted by
patterns for secrets in command lines. Every removal is counted; the counts land in the seals.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..configfile import refuse_unknown_keys
from ..errors import ConfigError
from .protojson import UINT64_MAX, normalize_argument, proto_int

REDACTED: Final = "[REDACTED]"

# Secrets seen in command lines and paths. A pattern with a group named `value` has only that
# group replaced, so `--password=hunter2` keeps its option name and loses its value.
DEFAULT_REDACT_PATTERNS: Final = (
    r"(?i)(?:--?|\b)(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|client[_-]?secret|auth|credentials?)(?:\s*[=:]\s*|\s+)(?P<value>[^\s&]+)",
    r"(?i)\bbearer\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})",
    r"://[^/\s:@]+:(?P<value>[^@\s/]+)@",  # user:password@ in URLs
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub tokens
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
)

# KprobeArgument fields (tetragon.proto) that hold a kernel or user address, never kept.
_ADDRESS_KEYS: Final = frozenset(("address", "addr"))


@dataclass(frozen=True)
class PrivacyPolicy:
    """The `tetragon.privacy` section of `stellaops.yaml`."""

    allow_arguments: frozenset[str] = frozenset()
    redact_patterns: tuple[re.Pattern[str], ...] = field(
        default_factory=lambda: tuple(re.compile(p) for p in DEFAULT_REDACT_PATTERNS)
    )
    keep_stack_traces: bool = True

    @classmethod
    def from_section(cls, section: Any, source: str | Path | None = None) -> PrivacyPolicy:
        def fail(message: str, key: str) -> ConfigError:
            return ConfigError(message, path=source, field=f"tetragon.privacy.{key}")

        if section is None:
            return cls()
        if not isinstance(section, dict):
            raise ConfigError("expected a mapping", path=source, field="tetragon.privacy")
        known = {"allow_arguments", "redact_patterns", "default_patterns", "keep_stack_traces"}
        refuse_unknown_keys(section, known, source, "tetragon.privacy.")
        allowed = section.get("allow_arguments", [])
        if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
            raise fail("expected a list of argument labels", "allow_arguments")
        extra = section.get("redact_patterns", [])
        if not isinstance(extra, list) or not all(isinstance(p, str) for p in extra):
            raise fail("expected a list of regular expressions", "redact_patterns")
        defaults = section.get("default_patterns", True)
        if not isinstance(defaults, bool):
            raise fail("expected true or false", "default_patterns")
        keep_stacks = section.get("keep_stack_traces", True)
        if not isinstance(keep_stacks, bool):
            raise fail("expected true or false", "keep_stack_traces")
        patterns = [*DEFAULT_REDACT_PATTERNS] if defaults else []
        compiled = []
        for index, text in enumerate([*patterns, *extra]):
            try:
                compiled.append(re.compile(text))
            except re.error as exc:
                raise fail(
                    f"not a regular expression: {exc}",
                    f"redact_patterns[{index - len(patterns)}]",
                ) from exc
        return cls(frozenset(allowed), tuple(compiled), keep_stacks)


class PrivacyFilter:
    """Applies a policy to event values, counting what it removed in `counts`."""

    def __init__(self, policy: PrivacyPolicy | None = None) -> None:
        self.policy = policy or PrivacyPolicy()
        self.counts: Counter[str] = Counter()
        self._patterns = self.policy.redact_patterns
        # Paths repeat (one binary, many events): the redaction of each is computed once.
        self._path_cache: dict[str, str | None] = {}  # None: nothing to redact

    def redact_text(self, text: str, what: str) -> str:
        """`text` with every pattern match (or its `value` group) replaced by [REDACTED]."""
        changed = 0
        for pattern in self._patterns:
            if pattern.search(text) is None:
                continue
            pieces: list[str] = []
            position = 0
            for match in pattern.finditer(text):
                start, end = match.span("value") if "value" in pattern.groupindex else match.span()
                if start < 0 or start < position:
                    continue
                pieces.append(text[position:start])
                pieces.append(REDACTED)
                position = end
                changed += 1
            pieces.append(text[position:])
            text = "".join(pieces)
        if changed:
            self.counts[f"redacted.{what}"] += changed
        return text

    def redact_path(self, path: str) -> str:
        try:
            cached = self._path_cache[path]
        except KeyError:
            pass
        else:
            if cached is None:
                return path
            self.counts["redacted.path"] += 1
            return cached
        redacted = self.redact_text(path, "path")
        if len(self._path_cache) < 65536:
            self._path_cache[path] = None if redacted == path else redacted
        return redacted

    def arguments(self, args: Any) -> list[dict[str, Any]] | None:
        """The allowed arguments (by label), their strings redacted; the rest counted."""
        if not isinstance(args, list):
            self.counts["ignored.args:wrong_type"] += 1
            return None
        if not args:
            return None
        kept = []
        for argument in args:
            label = argument.get("label") if isinstance(argument, dict) else None
            if not isinstance(label, str) or label not in self.policy.allow_arguments:
                self.counts["redacted.argument"] += 1
                continue
            # In the one form of Tetragon's JSON (names, integers, enums: protojson.py).
            kept.append(self._scrub(normalize_argument(argument)))
        return kept or None

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value, "argument_value")
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key in _ADDRESS_KEYS:
                    self.counts["redacted.address"] += 1
                    continue
                out[key] = self._scrub(item)
            return out
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        return value

    def stack(self, frames: Any) -> list[dict[str, Any]] | None:
        """Frames as {module, offset, symbol}: the raw `address` of each is dropped."""
        if not isinstance(frames, list) or not frames:
            return None
        if not self.policy.keep_stack_traces:
            self.counts["redacted.stack_frame"] += len(frames)
            return None
        out = []
        for frame in frames:
            if not isinstance(frame, dict):
                self.counts["redacted.stack_frame"] += 1
                continue
            # 0 (a uint64's default) is no address: as if left out, as Tetragon writes it.
            address = frame.get("address")
            if address is not None and proto_int(address, 0, UINT64_MAX) != 0:
                self.counts["redacted.address"] += 1
            canonical: dict[str, Any] = {
                "module": self.redact_path(_text(frame.get("module")) or "[kernel]")
            }
            offset = proto_int(frame.get("offset"), 0, UINT64_MAX)
            if offset:  # 0 as well: the field left out
                canonical["offset"] = f"0x{offset:x}"
            symbol = _text(frame.get("symbol"))
            if symbol:
                canonical["symbol"] = symbol
            out.append(canonical)
        return out or None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
