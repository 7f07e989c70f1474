"""The bearer token of ``ilinkbot serve``: made on first use, kept 0600, checked per request.

Accepted forms, for callers that can and cannot set headers:

* ``Authorization: Bearer TOKEN``;
* ``Authorization: Basic base64(ANY:TOKEN)`` (ntfy's ``-u :TOKEN``, Apprise ``user:pass@``);
* ``?auth=TOKEN``, or ntfy's form ``?auth=base64url("Bearer TOKEN")`` / ``("Basic ...")``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from pathlib import Path

from ilinkbot.ilink.log import register_secret

__all__ = ["TOKEN_FILE", "load_or_create_token", "request_token", "token_matches", "token_path"]

TOKEN_FILE = "serve-token"
_PREFIX = "ilk_"


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def load_or_create_token(home: Path) -> tuple[str, bool]:
    """The stored token (made now if missing: 0600, atomically). Returns ``(token, created)``.

    The token is registered as a log secret so no log line shows it."""
    path = token_path(home)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    created = False
    if not token:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = _PREFIX + secrets.token_urlsafe(32)
        tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(token + "\n")
            os.chmod(tmp, 0o600)
            try:
                # Never replace a token another process wrote meanwhile.
                os.link(tmp, path)
                created = True
            except FileExistsError:
                token = path.read_text(encoding="utf-8").strip()
        finally:
            tmp.unlink(missing_ok=True)
    else:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    register_secret(token)
    return token, created


def token_matches(given: str | None, token: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _b64(text: str) -> str | None:
    raw = text.strip()
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        try:
            return base64.b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None


def _from_header(value: str) -> str | None:
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return rest.strip()
    if scheme == "basic":
        decoded = _b64(rest)
        if decoded is None:
            return None
        user, _, password = decoded.partition(":")
        return password or user
    return None


def request_token(authorization: str | None, auth_param: str | None) -> list[str]:
    """Every token candidate a request carries (header first, then ``?auth=``)."""
    out: list[str] = []
    if authorization:
        got = _from_header(authorization)
        if got:
            out.append(got)
    if auth_param:
        out.append(auth_param.strip())
        decoded = _b64(auth_param)
        if decoded:
            got = _from_header(decoded)
            if got:
                out.append(got)
    return out
