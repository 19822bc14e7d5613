"""Hypothesis profiles for the property-based tests and fuzzers (``pytest -m fuzz`` runs the HTTP fuzzers alone).

* ``ci`` (the default): a fixed budget, derandomised (the same examples on every run, no example database), so
  the whole fuzz suite stays within about two minutes on a 2-core machine and a failure reproduces exactly.
* ``thorough``: ``HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest -m fuzz mpesa/tests/test_properties.py``
  (or ``--hypothesis-profile=thorough``): twenty times the examples, random, and failing examples kept in
  ``var/hypothesis/`` (not committed) and replayed first on the next run. Takes tens of minutes.

Tests size their own budget as a multiple of the profile's ``max_examples`` (an HTTP example costs more than a call
to a pure function), so the profile scales all of them together.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

# Tests that use function-scoped fixtures (the database, the Django test client, the simulator) snapshot the
# state they check before and after each example instead of relying on a fresh fixture per example.
_SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,  # HTTP round trips and a database: timing is not what these tests check
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    derandomize=False,
    database=DirectoryBasedExampleDatabase(str(Path(__file__).resolve().parent / "var" / "hypothesis")),
    deadline=None,
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
