"""Exit codes of the ``ilinkbot`` command (the README lists the same table)."""

from enum import IntEnum

__all__ = ["Exit"]


class Exit(IntEnum):
    OK = 0  # done; for send: delivered (the server answered with a message_id)
    ERROR = 1  # unexpected error
    USAGE = 2  # bad arguments or bad configuration
    HELD = 3  # send: held, the reply window is closed; goes out when the user writes
    UNCONFIRMED = 4  # send: ret=0 without message_id, delivery not confirmed
    NO_CONTEXT = 5  # send: that user never wrote to the bot (no context token)
    SESSION_EXPIRED = 6  # the bot token is stale: run `ilinkbot login` (a send is kept)
    FAILED = 7  # send: refused by the server or failed after retries
    NO_ACCOUNT = 8  # no account logged in, the default one logged out, or an ambiguous choice
    LOGIN_FAILED = 9  # login: QR codes expired, verification blocked, or timed out
    NOT_FOUND = 10  # unknown user, alias, outbox id or file
    # the database or $ILINKBOT_HOME is unusable: not a database, read-only, disk full,
    # PostgreSQL unreachable or missing
    STORAGE = 11
    INTERRUPTED = 130  # Ctrl-C (or SIGTERM during send)
