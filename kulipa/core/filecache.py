"""The cache for the abuse limits' counters when there is no Redis: Django's file cache, made safe to count with.

Django's ``FileBasedCache`` is shared by every process of one machine (gunicorn workers, the huey consumer), needs
no setup and no server, and never touches the database (whose single SQLite writer the checkouts need). Two of its
operations are not fit for counting as they are, and this subclass fixes both:

* ``add`` and ``incr`` read and then write: two processes counting at once could both read 4 and both write 5.
  Here both hold an exclusive ``flock`` on one lock file in the cache directory, so every request is counted.
* ``incr`` rewrote the value with the *default* timeout, so a counter's window restarted at every hit (and ended
  early when the default is shorter than the window). Here it keeps the counter's own expiry.

When entries pass ``MAX_ENTRIES``, expired files are removed first; only then does Django's random cull run.
With ``REDIS_URL`` set the shop uses Django's ``RedisCache`` instead (``INCR`` is atomic there), see settings.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.filebased import FileBasedCache

LOCK_FILE = ".counters.lock"  # not ending in .djcache: never listed, culled or cleared as an entry


class LockedFileBasedCache(FileBasedCache):
    """``FileBasedCache`` with ``add``/``incr`` atomic across processes and ``incr`` keeping the expiry."""

    if TYPE_CHECKING:  # Django's own helpers, absent from its type stubs
        _dir: str
        _max_entries: int

        def _createdir(self) -> None: ...
        def _key_to_file(self, key: Any, version: int | None = None) -> str: ...
        def _delete(self, fname: str) -> bool: ...
        def _list_cache_files(self) -> list[str]: ...

    @contextmanager
    def _counting(self) -> Iterator[None]:
        self._createdir()
        with open(os.path.join(self._dir, LOCK_FILE), "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        with self._counting():
            return bool(super().add(key, value, timeout, version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        with self._counting():
            fname = self._key_to_file(key, version)
            try:
                with open(fname, "rb") as f:
                    # The cache's own files, written by this server, read as Django's FileBasedCache reads them.
                    expiry = pickle.load(f)  # noqa: S301
                    value = pickle.loads(zlib.decompress(f.read()))  # noqa: S301
            except (FileNotFoundError, EOFError):
                raise ValueError(f"Key '{key}' not found") from None
            now = time.time()
            if expiry is not None and expiry < now:
                self._delete(fname)
                raise ValueError(f"Key '{key}' not found")
            new_value = value + delta
            timeout = None if expiry is None else max(expiry - now, 0.001)
            self.set(key, new_value, timeout=timeout, version=version)
            return new_value

    def _cull(self) -> None:
        """Over ``MAX_ENTRIES``: drop the expired entries, then (still over) let Django drop random ones."""
        files = self._list_cache_files()
        if len(files) < self._max_entries:
            return
        now = time.time()
        for fname in files:
            try:
                with open(fname, "rb") as f:
                    expiry = pickle.load(f)  # noqa: S301
            except (FileNotFoundError, EOFError, pickle.UnpicklingError):
                continue
            if expiry is not None and expiry < now:
                self._delete(fname)
        super()._cull()  # type: ignore[misc]
