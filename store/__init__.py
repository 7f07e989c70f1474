"""ilinkbot's store: accounts, cursors, peers, inbox, outbox and user data.

SQLite by default (``$ILINKBOT_HOME/ilinkbot.db``), PostgreSQL when the database URL says so,
one repository API over both. The store sits at the bottom of ilinkbot's layers and imports
none of ``ilink``, ``cdn`` or ``bot``.
"""

from .engine import default_home, resolve_url
from .errors import (
    DatabaseUrlError,
    InvalidTransitionError,
    NotFoundError,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    UnknownAccountError,
)
from .migrations import SCHEMA_VERSION, SchemaTooNewError
from .models import (
    Account,
    AccountState,
    InboundRecord,
    InboxRow,
    OutboxRow,
    OutboxState,
    Peer,
    PendingLogin,
)
from .repository import Store, new_client_id
from .sending import ClaimedSend

__all__ = [
    "SCHEMA_VERSION",
    "Account",
    "AccountState",
    "ClaimedSend",
    "DatabaseUrlError",
    "InboundRecord",
    "InboxRow",
    "InvalidTransitionError",
    "NotFoundError",
    "OutboxRow",
    "OutboxState",
    "Peer",
    "PendingLogin",
    "SchemaTooNewError",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "UnknownAccountError",
    "default_home",
    "new_client_id",
    "resolve_url",
]
