"""Peers (the users an account talks to), their aliases, and per-user data."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Executable, bindparam, delete, select, update

from .db import Db, StoreBase
from .driver import InsertFactory, Sql
from .errors import InvalidTransitionError
from .models import Peer, peers, user_data
from .rows import peer_row

__all__ = ["PeersStore", "move_aliases"]


PEER = Sql(
    lambda _: select(peers).where(
        peers.c.bot_id == bindparam("bot_id"), peers.c.user_id == bindparam("user_id")
    )
)
#: The peers a reference may name: by alias, by user id (at most one of each).
PEERS_NAMED = Sql(
    lambda _: select(peers).where(
        peers.c.bot_id == bindparam("bot_id"),
        (peers.c.alias == bindparam("ref")) | (peers.c.user_id == bindparam("ref")),
    )
)
ALIAS_OWNER = Sql(
    lambda _: select(peers.c.user_id).where(
        peers.c.bot_id == bindparam("bot_id"), peers.c.alias == bindparam("alias")
    )
)


def _set_alias(insert: InsertFactory) -> Executable:
    """Name a user, creating the peer if unknown."""
    stmt = insert(peers).values(
        bot_id=bindparam("bot_id"),
        user_id=bindparam("user_id"),
        alias=bindparam("alias"),
        sent_since_inbound=0,
    )
    return stmt.on_conflict_do_update(
        index_elements=[peers.c.bot_id, peers.c.user_id], set_={"alias": stmt.excluded.alias}
    )


SET_ALIAS = Sql(_set_alias)


class PeersStore(StoreBase):
    """Peers, aliases and user data."""

    def get_peer(self, bot_id: str, user_id: str) -> Peer | None:
        with self._db.lane.read() as cur:
            row = cur.one(PEER, bot_id=bot_id, user_id=user_id)
        return peer_row(row) if row is not None else None

    def list_peers(self, bot_id: str) -> list[Peer]:
        """Peers of an account, most recently seen first."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(peers)
                .where(peers.c.bot_id == bot_id)
                .order_by(peers.c.last_seen_at.desc().nulls_last(), peers.c.user_id)
            ).mappings()
            return [peer_row(r) for r in rows]

    def set_alias(self, bot_id: str, user_id: str, alias: str | None) -> None:
        """Name a user (unique per account); None clears. Creates the peer if unknown."""
        alias = alias or None
        with self._db.write() as conn:
            self._db.require_account(conn, bot_id)
            if alias is not None:
                owner = self._db.run(conn, ALIAS_OWNER, bot_id=bot_id, alias=alias).scalar()
                if owner is not None and owner != user_id:
                    raise InvalidTransitionError(
                        f"alias {alias!r} already names {owner!r} on {bot_id!r}"
                    )
            self._db.run(conn, SET_ALIAS, bot_id=bot_id, user_id=user_id, alias=alias)

    def peer_named(self, bot_id: str, ref: str) -> Peer | None:
        """The peer ``ref`` names: the one whose alias it is, else the one whose user id it
        is (one read instead of :meth:`resolve_alias` and :meth:`get_peer`)."""
        with self._db.lane.read() as cur:
            rows = cur.all(PEERS_NAMED, bot_id=bot_id, ref=ref)
        if not rows:
            return None
        return peer_row(next((r for r in rows if r["alias"] == ref), rows[0]))

    def resolve_alias(self, bot_id: str, alias: str) -> str | None:
        with self._db.lane.read() as cur:
            value = cur.scalar(ALIAS_OWNER, bot_id=bot_id, alias=alias)
        return str(value) if value is not None else None

    # ------------------------------------------------------------------ user data

    def get_user_data(self, bot_id: str, user_id: str) -> dict[str, Any]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(user_data.c.key, user_data.c.value)
                .where(user_data.c.bot_id == bot_id, user_data.c.user_id == user_id)
                .order_by(user_data.c.key)
            ).all()
        return {str(r.key): r.value for r in rows}

    def set_user_value(self, bot_id: str, user_id: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key`` for that user."""
        now = self._db.now()
        stmt = self._db.insert(user_data).values(
            bot_id=bot_id, user_id=user_id, key=key, value=value, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[user_data.c.bot_id, user_data.c.user_id, user_data.c.key],
            set_={"value": stmt.excluded.value, "updated_at": now},
        )
        with self._db.write() as conn:
            self._db.require_account(conn, bot_id)
            conn.execute(stmt)

    def delete_user_value(self, bot_id: str, user_id: str, key: str) -> bool:
        with self._db.write() as conn:
            result = conn.execute(
                delete(user_data).where(
                    user_data.c.bot_id == bot_id,
                    user_data.c.user_id == user_id,
                    user_data.c.key == key,
                )
            )
            return result.rowcount > 0


def move_aliases(db: Db, conn: Connection, old: str, new: str) -> None:
    """Aliases of ``old`` move to ``new`` (the new account's own naming wins)."""
    named = conn.execute(
        select(peers.c.user_id, peers.c.alias).where(
            peers.c.bot_id == old, peers.c.alias.is_not(None)
        )
    ).all()
    for user_id, alias in named:
        taken = conn.execute(
            select(peers.c.user_id).where(
                peers.c.bot_id == new,
                (peers.c.alias == alias)
                | ((peers.c.user_id == user_id) & peers.c.alias.is_not(None)),
            )
        ).first()
        if taken is not None:
            continue  # the new account's own naming wins
        db.run(conn, SET_ALIAS, bot_id=new, user_id=user_id, alias=alias)
        conn.execute(
            update(peers)
            .where(peers.c.bot_id == old, peers.c.user_id == user_id)
            .values(alias=None)
        )
