"""Database sessions with fewer round trips: ``SESSION_ENGINE = "kulipa.core.sessions"``.

Django's database backend, same table and same data, with two costs removed from the request path:

* A new session's key is not looked up first (``SELECT 1 … WHERE session_key = …``): the INSERT of a new session
  is ``force_insert``, so the primary key refuses a key already taken, Django's ``create()`` gets ``CreateError``
  and draws another key. The look-up only made that (1 in 36^32) case cheaper, at one query per new session.
* Outside a transaction, the save is the one INSERT or UPDATE statement in autocommit, not BEGIN, the statement,
  COMMIT: a single statement is atomic by itself, and a failed one leaves no transaction to unwind. Inside a
  transaction (``transaction.atomic()`` around it) Django's own savepoint is kept, so a failed INSERT does not
  abort the caller's transaction.

Not ``cached_db``: every session write (a cart change, a placed order) would write the database AND the cache,
and a session read costs the same one indexed query as a cache get. Not signed cookies: orders, abuse limits and
"try again" are tied to a server-side session key.
"""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError, UpdateError
from django.db import DatabaseError, IntegrityError, connections, router
from django.utils.crypto import get_random_string


class SessionStore(db.SessionStore):
    def _get_new_session_key(self) -> str:
        """A random key, not checked: the INSERT with ``force_insert`` is the check (see the module)."""
        return get_random_string(32, VALID_KEY_CHARS)

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        using = router.db_for_write(self.model)
        if connections[using].in_atomic_block:
            return super().save(must_create=must_create)  # a savepoint protects the caller's transaction
        data = self._get_session(no_load=must_create)  # type: ignore[attr-defined]  # Django's, not in the stubs
        obj = self.create_model_instance(data)
        try:
            obj.save(force_insert=must_create, force_update=not must_create, using=using)
        except IntegrityError as exc:
            if must_create:
                raise CreateError from exc
            raise
        except DatabaseError as exc:
            if not must_create:
                raise UpdateError from exc
            raise
        return None
