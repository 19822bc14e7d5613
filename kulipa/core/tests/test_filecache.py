"""The file cache the abuse limits count in without Redis (kulipa.core.filecache): shared by separate cache
objects on one directory (as the processes of one machine share it), counting every increment when they count at
once, and keeping each counter's own window."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import pytest

from kulipa.core.filecache import LockedFileBasedCache


def cache_on(directory: Path, **options: int) -> LockedFileBasedCache:
    """A cache object of its own on ``directory``: what each gunicorn process builds from the settings."""
    return LockedFileBasedCache(str(directory), {"OPTIONS": options})


def test_separate_cache_objects_share_the_counters(tmp_path: Path) -> None:
    one, two = cache_on(tmp_path), cache_on(tmp_path)
    assert one.add("k", 1, 60) is True
    assert two.add("k", 1, 60) is False  # already there, from the other "process"
    assert two.incr("k") == 2
    assert one.get("k") == 2


def test_concurrent_increments_all_count(tmp_path: Path) -> None:
    """Django's file cache reads then writes: two at once both write n + 1. Here 8 × 50 increments from 8 cache
    objects at once make exactly 400 (django-ratelimit's add, then incr, as it counts)."""
    threads, each = 8, 50
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def count() -> None:
        cache = cache_on(tmp_path)
        try:
            barrier.wait(timeout=10)
            for _ in range(each):
                if not cache.add("hits", 1, 600):
                    cache.incr("hits")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    assert cache_on(tmp_path).get("hits") == threads * each


class Clock:
    """``time.time`` for the caches, moved by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake


def expiry_of(cache: LockedFileBasedCache, key: str) -> float:
    with open(cache._key_to_file(key), "rb") as f:
        expiry: float = pickle.load(f)
    return expiry


def test_incr_keeps_the_window(tmp_path: Path, clock: Clock) -> None:
    """Django's incr rewrote the value with the default timeout (300 s): a 10-minute window ended 5 minutes after
    the last hit, a 1-minute one lasted 5. The counter keeps the expiry it was added with."""
    cache = cache_on(tmp_path)
    cache.add("window", 1, 600)
    added_until = expiry_of(cache, "window")
    clock.now += 400
    assert cache.incr("window") == 2
    assert expiry_of(cache, "window") == pytest.approx(added_until, abs=0.01)
    clock.now += 201
    assert cache.get("window") is None  # the window ended on time
    with pytest.raises(ValueError, match="not found"):
        cache.incr("window")


def test_culling_drops_expired_counters_first(tmp_path: Path, clock: Clock) -> None:
    cache = cache_on(tmp_path, MAX_ENTRIES=10, CULL_FREQUENCY=1)
    for i in range(9):
        cache.set(f"old-{i}", 1, 60)
    cache.set("live", 7, 600)
    clock.now += 61
    cache.set("new", 1, 600)  # at MAX_ENTRIES: the nine expired go; Django alone would drop all ten
    assert cache.get("live") == 7 and cache.get("new") == 1
