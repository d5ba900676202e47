"""The catalog tests and benchmarks run on: the product's config with `tests/config/models.yaml` over it, models
whose prices have not moved for years, and the names the wire-format servers answer as in the tests."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIG_DIRS = os.pathsep.join([str(ROOT / "config"), str(ROOT / "tests" / "config")])


def use_test_catalog() -> None:
    """Point this process (and the processes it starts) at the test catalog, before any settings are read."""
    os.environ["ORCH_CONFIG_DIR"] = TEST_CONFIG_DIRS
