"""The `tetragon:` section of `stellaops.yaml`: bridge switch, privacy policy, line limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configfile import refuse_unknown_keys
from ..errors import ConfigError
from ..evidence.config import read_stellaops
from .privacy import PrivacyPolicy
from .sources import DEFAULT_MAX_LINE_BYTES

_KEYS = {"enabled", "privacy", "max_line_bytes", "chain_id"}


@dataclass(frozen=True)
class TetragonConfig:
    """`enabled: false` turns the bridge off: ingest refuses, queries answer empty."""

    enabled: bool = True
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    chain_id: str | None = None


def parse_tetragon_section(section: Any, source: str | Path | None = None) -> TetragonConfig:
    if section is None:
        return TetragonConfig()
    if not isinstance(section, dict):
        raise ConfigError("expected a mapping", path=source, field="tetragon")
    refuse_unknown_keys(section, _KEYS, source, "tetragon.")
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("expected true or false", path=source, field="tetragon.enabled")
    limit = section.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1024:
        raise ConfigError(
            "expected an integer >= 1024", path=source, field="tetragon.max_line_bytes"
        )
    chain_id = section.get("chain_id")
    if chain_id is not None and not isinstance(chain_id, str):
        raise ConfigError("expected a string", path=source, field="tetragon.chain_id")
    return TetragonConfig(
        enabled=enabled,
        privacy=PrivacyPolicy.from_section(section.get("privacy"), source),
        max_line_bytes=limit,
        chain_id=chain_id,
    )


def load_tetragon_config(path: str | Path | None) -> TetragonConfig:
    if path is None:
        return TetragonConfig()
    return parse_tetragon_section(read_stellaops(path).get("tetragon"), path)
