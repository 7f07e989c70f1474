"""A small versioned migration scheme (no Alembic), run by :meth:`Store.open`.

* ``ilinkbot_schema`` holds one row per applied version; the schema version is the highest.
* A fresh database gets the *current* tables from :data:`store.models.metadata` in one go and
  is stamped :data:`SCHEMA_VERSION`.
* An older database is upgraded by running :data:`STEPS` ``[v+1] .. [SCHEMA_VERSION]`` in order,
  each recording its row, all in the same transaction as the check: on SQLite under
  ``BEGIN IMMEDIATE`` (DDL is transactional there once the driver stops auto-committing), on
  PostgreSQL under a transaction-scoped advisory lock, so several processes opening the store at
  once migrate it exactly once, and a failed step leaves the old version intact.
* A database stamped newer than this code is refused rather than misread.

To change the schema: edit ``models.py`` (what a fresh database gets), bump
:data:`SCHEMA_VERSION`, and add the step that brings a previous database to the same shape, e.g.
``STEPS[2] = Step("outbox.not_before", lambda c: c.exec_driver_sql("ALTER TABLE ..."))``.
SQLite's ``ALTER TABLE`` can add/rename/drop columns; anything else means the usual
create-copy-rename dance inside the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, func, insert, inspect, select, text

from .log import get_logger
from .models import OutboxState, metadata, outbox, schema_table, settings, workers

__all__ = ["SCHEMA_VERSION", "STEPS", "SchemaTooNewError", "Step", "current_version", "migrate"]

log = get_logger(__name__)

SCHEMA_VERSION = 5

# PostgreSQL advisory-lock key (two int4): "il" / migrations.
_PG_LOCK_NAMESPACE = 0x696C
_PG_MIGRATION_KEY = 1


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer ilinkbot."""


@dataclass(frozen=True)
class Step:
    description: str
    upgrade: Callable[[Connection], object]


def _outbox_v4(conn: Connection) -> None:
    """outbox: the ``session_expired`` state and the ``claimed_by`` column."""
    states = ", ".join(f"'{s.value}'" for s in OutboxState)
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE outbox ADD COLUMN claimed_by VARCHAR(255)"))
        conn.execute(text("ALTER TABLE outbox DROP CONSTRAINT ck_outbox_state"))
        conn.execute(
            text(f"ALTER TABLE outbox ADD CONSTRAINT ck_outbox_state CHECK (state IN ({states}))")
        )
        return
    # SQLite cannot change a CHECK constraint: build the new table, copy, swap. Nothing
    # references outbox, so foreign keys stay on; ids are kept (order is by id).
    for (name,) in conn.execute(
        text(
            "SELECT name FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = 'outbox' AND sql IS NOT NULL"
        )
    ).all():
        conn.execute(text(f'DROP INDEX "{name}"'))
    conn.execute(text("ALTER TABLE outbox RENAME TO outbox_before"))
    outbox.create(conn)
    cols = ", ".join(c.name for c in outbox.columns if c.name != "claimed_by")
    conn.execute(text(f"INSERT INTO outbox ({cols}) SELECT {cols} FROM outbox_before"))
    conn.execute(text("DROP TABLE outbox_before"))


def _accounts_ref(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE accounts ADD COLUMN ref VARCHAR(255)"))
    conn.execute(text("CREATE INDEX ix_accounts_ref ON accounts (ref)"))


#: version -> the step that upgrades a database at ``version - 1`` to ``version``.
STEPS: dict[int, Step] = {
    2: Step("settings table (the default account)", lambda c: settings.create(c)),
    3: Step("workers table (several processes share the accounts)", lambda c: workers.create(c)),
    4: Step("outbox: the session_expired state and claimed_by", _outbox_v4),
    5: Step("accounts.ref (the platform's user id, serve's accounts API)", _accounts_ref),
}


def current_version(conn: Connection) -> int | None:
    """The database's schema version, or None for a database without ilinkbot tables."""
    if not inspect(conn).has_table(schema_table.name):
        return None
    version = conn.execute(select(func.max(schema_table.c.version))).scalar_one_or_none()
    return int(version) if version is not None else None


def migrate(engine: Engine, *, target: int | None = None) -> int:
    """Create or upgrade the schema; returns the version the database is at afterwards."""
    goal = SCHEMA_VERSION if target is None else target
    with engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                {"ns": _PG_LOCK_NAMESPACE, "key": _PG_MIGRATION_KEY},
            )
        version = current_version(conn)
        now = datetime.now(UTC)
        if version is None:
            metadata.create_all(conn)
            conn.execute(
                insert(schema_table).values(
                    version=goal, description="initial schema", applied_at=now
                )
            )
            log.info("store_schema_created", version=goal)
            return goal
        if version > goal:
            raise SchemaTooNewError(
                f"the database is at schema version {version}, this ilinkbot knows up to "
                f"{goal}: upgrade ilinkbot"
            )
        for step_version in range(version + 1, goal + 1):
            step = STEPS.get(step_version)
            if step is None:
                raise RuntimeError(f"no migration step to schema version {step_version}")
            step.upgrade(conn)
            conn.execute(
                insert(schema_table).values(
                    version=step_version, description=step.description, applied_at=now
                )
            )
            log.info("store_schema_migrated", version=step_version, step=step.description)
        return goal
