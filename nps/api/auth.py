"""Users, projects and API tokens, kept in the object store (the system of record).

- A user has a role: ``admin`` (everything), ``member`` (read and write in their projects),
  ``viewer`` (read in their projects).
- A token is shown once, at creation; only its SHA-256 is stored (``auth/tokens/<sha256>``),
  so a leaked bucket does not leak usable tokens. Tokens can expire and be revoked.
- Every dataset belongs to a project (``dataset.json``'s ``project``; none means the
  ``default`` project). A user sees only their projects' data.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationError

from nps.blobs import Blobs
from nps.errors import NPSError, PermissionDenied
from schemas.common import DEFAULT_PROJECT, Frozen, utcnow

TOKEN_PREFIX = "nps_"
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9._-]{0,63}$")]


class AuthError(NPSError):
    """No token, or a wrong, revoked or expired one."""


class Role(StrEnum):
    """What a user may do."""

    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class User(Frozen):
    """A person (or a pipeline) using the API."""

    name: Name
    role: Role
    projects: tuple[Name, ...] = ()
    created_at: datetime = Field(default_factory=utcnow)

    def can_read(self, project: str | None) -> bool:
        """True when the user may see data of ``project``."""
        return self.role == Role.ADMIN or (project or DEFAULT_PROJECT) in self.projects

    def can_write(self, project: str | None) -> bool:
        """True when the user may create data (submit jobs) in ``project``."""
        return self.role == Role.ADMIN or (self.role == Role.MEMBER and self.can_read(project))

    def readable(self) -> tuple[str, ...] | None:
        """Projects this user may read; None means all (admin)."""
        return None if self.role == Role.ADMIN else self.projects


class Token(Frozen):
    """A stored token: its hash, owner, expiry and whether it was revoked."""

    id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{12}$")]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    user: Name
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked: bool = False


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Auth:
    """Users, projects and tokens in ``blobs`` under ``auth/``."""

    def __init__(self, blobs: Blobs, cache_seconds: float = 0.0) -> None:
        self.blobs = blobs
        # token hash -> (user, token expiry, when cached): accepted tokens only, for a few
        # seconds, so a request does not pay two object-store reads (~3.5 ms) every time. A
        # revocation or role change made elsewhere takes effect within ``cache_seconds``.
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[User, datetime | None, float]] = {}

    # ---- users -------------------------------------------------------------------------------
    def add_user(self, name: str, role: Role, projects: tuple[str, ...] = ()) -> User:
        """Create or update a user."""
        try:
            user = User(name=name, role=role, projects=tuple(sorted(set(projects))))
        except ValidationError as exc:
            raise NPSError(f"invalid user: {exc.errors()[0]['msg']}") from exc
        self.blobs.put(f"auth/users/{user.name}.json", user.model_dump_json().encode())
        return user

    def user(self, name: str) -> User | None:
        """A user by name, or None."""
        raw = self.blobs.get(f"auth/users/{name}.json") if _safe(name) else None
        return User.model_validate_json(raw) if raw else None

    def users(self) -> list[User]:
        """Every user."""
        found = [self.user(n.removesuffix(".json")) for n in self.blobs.children("auth/users")]
        return [u for u in found if u is not None]

    def grant(self, name: str, project: str) -> User:
        """Add ``project`` to a user's projects."""
        user = self.user(name)
        if user is None:
            raise NPSError(f"no user {name!r}")
        return self.add_user(user.name, user.role, (*user.projects, project))

    # ---- tokens ------------------------------------------------------------------------------
    def create_token(self, user: str, ttl: timedelta | None = None) -> tuple[str, Token]:
        """A new token for ``user``: (the secret, shown once; its stored record)."""
        if self.user(user) is None:
            raise NPSError(f"no user {user!r}: create it first (nps admin user add)")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(secret)
        record = Token(id=digest[:12], sha256=digest, user=user,
                       expires_at=utcnow() + ttl if ttl else None)
        self.blobs.put(f"auth/tokens/{digest}.json", record.model_dump_json().encode())
        return secret, record

    def tokens(self) -> list[Token]:
        """Every token record (never the secrets)."""
        out = []
        for child in self.blobs.children("auth/tokens"):
            raw = self.blobs.get(f"auth/tokens/{child}")
            if raw:
                out.append(Token.model_validate_json(raw))
        return out

    def revoke(self, token_id: str) -> Token:
        """Revoke by the id shown at creation (the first 12 characters of its hash)."""
        for token in self.tokens():
            if token.id == token_id:
                revoked = token.model_copy(update={"revoked": True})
                self.blobs.put(f"auth/tokens/{token.sha256}.json", revoked.model_dump_json().encode())
                self._cache.pop(token.sha256, None)
                return revoked
        raise NPSError(f"no token with id {token_id!r}")

    def trusted(self, secret: str) -> User | None:
        """The user of a token checked less than ``cache_seconds`` ago (and not expired since);
        None when it must be checked (no I/O here)."""
        if not self._cache:
            return None
        digest = hash_token(secret)
        cached = self._cache.get(digest)
        if cached is None:
            return None
        known, expires_at, at = cached
        if time.monotonic() - at < self.cache_seconds and (expires_at is None or expires_at > utcnow()):
            return known
        self._cache.pop(digest, None)
        return None

    def authenticate(self, secret: str | None) -> User:
        """The user a bearer token belongs to; AuthError for anything else (same message for
        an unknown, revoked or expired token, so the answer reveals nothing)."""
        if not secret or len(secret) > 200 or not secret.startswith(TOKEN_PREFIX):
            raise AuthError("missing or invalid token")
        known = self.trusted(secret)
        if known is not None:
            return known
        digest = hash_token(secret)
        raw = self.blobs.get(f"auth/tokens/{digest}.json")
        token = Token.model_validate_json(raw) if raw else None
        if token is None or not hmac.compare_digest(token.sha256, digest) or token.revoked or (
                token.expires_at is not None and token.expires_at <= utcnow()):
            raise AuthError("missing or invalid token")
        user = self.user(token.user)
        if user is None:
            raise AuthError("missing or invalid token")
        if self.cache_seconds > 0:
            if len(self._cache) >= 10_000:
                self._cache.clear()
            self._cache[digest] = (user, token.expires_at, time.monotonic())
        return user


def require_write(user: User, project: str | None) -> None:
    """PermissionDenied unless ``user`` may write in ``project``."""
    if not user.can_write(project):
        raise PermissionDenied(f"user {user.name!r} may not create data in project {project or DEFAULT_PROJECT!r}")


def _safe(name: str) -> bool:
    try:
        User.model_validate({"name": name, "role": "viewer"})
        return True
    except ValidationError:
        return False
