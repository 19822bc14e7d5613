"""The benchmarks' production settings (:mod:`benchmarks.settings`: limits off) with a URLconf that adds the in-request
payment view of :mod:`benchmarks.inrequest.views`. For the ``pending`` benchmark only."""

from benchmarks.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.inrequest.urls"
