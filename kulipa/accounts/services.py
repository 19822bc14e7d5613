"""Account writes."""

from __future__ import annotations

from kulipa.accounts.models import User


def user_create(*, email: str, password: str) -> User:
    """A customer account (not staff). The e-mail is stored lower-case; the password is hashed."""
    return User.objects.create_user(email=email.strip().lower(), password=password)
