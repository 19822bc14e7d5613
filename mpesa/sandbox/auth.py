"""Checking ``Authorization: Bearer <token>``: the token must decrypt, with the sandbox's private key, to the API key.

An RSA 4096 decryption costs a few milliseconds, far too much to repeat for thousands of held requests, and clients
reuse one token (reference §3.2). So results are cached per token, decryptions of a token not yet seen run in the
default executor (off the event loop), and concurrent requests with the same new token share one decryption.
Tokens and the API key are never logged.
"""

from __future__ import annotations

import asyncio
import hmac

from cryptography.hazmat.primitives.asymmetric import rsa

from mpesa.token import decrypt_token

_MAX_TOKEN_CHARS = 4096


class TokenVerifier:
    def __init__(self, private_key: rsa.RSAPrivateKey, api_key: str, *, cache_size: int = 4096) -> None:
        self._private_key = private_key
        self._api_key = api_key
        self._cache_size = cache_size
        self._cache: dict[str, bool] = {}
        self._in_flight: dict[str, asyncio.Future[bool]] = {}

    async def is_valid(self, authorization: str | None) -> bool:
        """Whether the header value carries a token for the configured API key."""
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_CHARS:
            return False
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        waiting = self._in_flight.get(token)
        if waiting is not None:
            return await asyncio.shield(waiting)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._in_flight[token] = future
        try:
            api_key = await loop.run_in_executor(None, decrypt_token, token, self._private_key)
            valid = api_key is not None and hmac.compare_digest(api_key.encode(), self._api_key.encode())
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[token] = valid
            future.set_result(valid)
            return valid
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._in_flight[token]
