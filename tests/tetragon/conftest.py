"""Fixtures for the Tetragon bridge: Tetragon's proto compiled once per session."""

from __future__ import annotations

import pytest
from tetragon_support import TetragonProto, compile_proto


@pytest.fixture(scope="session")
def tetragon_pb(tmp_path_factory: pytest.TempPathFactory) -> TetragonProto:
    return compile_proto(tmp_path_factory.mktemp("tetragon-proto"))
