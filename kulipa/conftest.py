"""Fixtures for every Django test."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def _limit_counters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limit-counters")


@pytest.fixture(autouse=True)
def _fresh_limit_counters(settings: Any, _limit_counters_dir: Path) -> None:
    """Every test starts with empty abuse-limit counters: the suite places many orders from one test client and
    one address, and only the tests of the limits should meet them. A fresh key prefix per test (nothing is
    flushed: on Redis the cache may share its database with the queue); the file cache lives in a temporary
    directory, not in var/."""
    caches = copy.deepcopy(settings.CACHES)
    prefix = f"test-{uuid.uuid4().hex[:16]}"
    for config in caches.values():
        config["KEY_PREFIX"] = prefix
        if config["BACKEND"].endswith("FileBasedCache"):
            config["LOCATION"] = str(_limit_counters_dir)
    settings.CACHES = caches
