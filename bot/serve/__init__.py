"""``ilinkbot serve``: an HTTP push gateway (ntfy/Apprise/Alertmanager style) and a web
login page, optionally with the receive loop in the same process (``--poll``)."""

from __future__ import annotations

from .alerts import alertmanager_notification
from .app import Gateway, create_app, status_for
from .auth import load_or_create_token, token_path
from .bodies import BodyError, Notification, parse_push
from .poller import Poller

__all__ = [
    "BodyError",
    "Gateway",
    "Notification",
    "Poller",
    "alertmanager_notification",
    "create_app",
    "load_or_create_token",
    "parse_push",
    "status_for",
    "token_path",
]
