"""Bundle fixtures: a real function map, a real evidence chain, a built bundle."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bundle_helpers import SOURCE_DATE_EPOCH, BundleInputs, make_inputs


@pytest.fixture(scope="session")
def bundle_inputs(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> BundleInputs:
    return make_inputs(tmp_path_factory.mktemp("bundle-inputs"), test_keys)


@pytest.fixture(scope="session")
def built_bundle(
    tmp_path_factory: pytest.TempPathFactory, bundle_inputs: BundleInputs, test_keys: Any
) -> Path:
    from stella_bundle.bundle.build import build_bundle

    output = tmp_path_factory.mktemp("built") / "demo.stella.bundle.tgz"
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = SOURCE_DATE_EPOCH
    try:
        build_bundle(
            function_maps=[bundle_inputs.function_map],
            evidence=[bundle_inputs.evidence],
            signer=test_keys.signer("builder"),
            output=output,
        )
    finally:
        if previous is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous
    return output


@pytest.fixture
def copy_inputs(tmp_path: Path, bundle_inputs: BundleInputs) -> Callable[[], Path]:
    def copy() -> Path:
        target = tmp_path / "inputs"
        shutil.copytree(bundle_inputs.directory, target)
        return target

    return copy
