"""Accounts, the default-account setting, the pending QR login, polling leases, workers
and the counts of a status page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, case, delete, exists, func, select, update

from .db import StoreBase
from .driver import Sql
from .errors import UnknownAccountError
from .log import get_logger
from .models import (
    Account,
    AccountState,
    OutboxState,
    PendingLogin,
    accounts,
    cursors,
    inbox,
    leases,
    outbox,
    peers,
    pending_login,
    require_aware,
    settings,
    user_data,
    workers,
)
from .outbox import UNSENT
from .peers import move_aliases
from .rows import account_row

__all__ = ["AccountsStore"]

log = get_logger(__name__)

#: The ``settings`` key of the account pushes use when none is named.
_DEFAULT_ACCOUNT_KEY = "default_account"
_SETTING = Sql(lambda _: select(settings.c.value).where(settings.c.key == bindparam("key")))


ACCOUNT = Sql(lambda _: select(accounts).where(accounts.c.bot_id == bindparam("bot_id")))
ALL_ACCOUNTS = Sql(
    lambda _: select(accounts).order_by(accounts.c.last_used_at.desc(), accounts.c.bot_id)
)
ACCOUNTS_BY_REF = Sql(
    lambda _: (
        select(accounts)
        .where(accounts.c.ref == bindparam("ref"))
        .order_by(accounts.c.last_used_at.desc(), accounts.c.bot_id)
    )
)
LEASE_HOLDER = Sql(
    lambda _: select(leases.c.owner).where(
        leases.c.bot_id == bindparam("bot_id"), leases.c.expires_at >= bindparam("now")
    )
)


class AccountsStore(StoreBase):
    """Accounts and what is kept per account besides messages."""

    def save_account(
        self,
        bot_id: str,
        *,
        token: str,
        base_url: str | None,
        owner_user_id: str | None,
    ) -> Account:
        """Insert or update an account after a login: state active, ``last_used_at`` now.

        Empty/None ``base_url`` or ``owner_user_id`` keep the stored value (new non-empty
        values win, as the protocol's reference client merges them).
        """
        if not bot_id:
            raise ValueError("bot_id must be non-empty")
        if not token:
            raise ValueError("token must be non-empty")
        now = self._db.now()
        base_url = base_url or None
        owner_user_id = owner_user_id or None
        stmt = self._db.insert(accounts).values(
            bot_id=bot_id,
            token=token,
            base_url=base_url,
            owner_user_id=owner_user_id,
            state=AccountState.ACTIVE.value,
            created_at=now,
            updated_at=now,
            last_used_at=now,
            token_saved_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[accounts.c.bot_id],
            set_={
                "token": stmt.excluded.token,
                "base_url": func.coalesce(stmt.excluded.base_url, accounts.c.base_url),
                "owner_user_id": func.coalesce(
                    stmt.excluded.owner_user_id, accounts.c.owner_user_id
                ),
                "state": AccountState.ACTIVE.value,
                "updated_at": now,
                "last_used_at": now,
                "token_saved_at": now,
            },
        )
        with self._db.write() as conn:
            conn.execute(stmt)
            account = account_row(self._db.run(conn, ACCOUNT, bot_id=bot_id).mappings().one())
        log.info("account_saved", bot_id=bot_id)
        return account

    def get_account(self, bot_id: str) -> Account | None:
        with self._db.lane.read() as cur:
            row = cur.one(ACCOUNT, bot_id=bot_id)
        return account_row(row) if row is not None else None

    def list_accounts(self) -> list[Account]:
        """All accounts, most recently used first."""
        with self._db.lane.read() as cur:
            rows = cur.all(ALL_ACCOUNTS)
        return [account_row(r) for r in rows]

    def set_account_state(self, bot_id: str, state: AccountState | str) -> None:
        state = AccountState(state)
        with self._db.write() as conn:
            result = conn.execute(
                update(accounts)
                .where(accounts.c.bot_id == bot_id)
                .values(state=state.value, updated_at=self._db.now())
            )
            if result.rowcount == 0:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
        log.info("account_state", bot_id=bot_id, state=state.value)

    def logout(self, bot_id: str) -> None:
        """Forget the token, mark logged out; cursor, peers, inbox and outbox stay."""
        with self._db.write() as conn:
            result = conn.execute(
                update(accounts)
                .where(accounts.c.bot_id == bot_id)
                .values(
                    token=None,
                    token_saved_at=None,
                    state=AccountState.LOGGED_OUT.value,
                    updated_at=self._db.now(),
                )
            )
            if result.rowcount == 0:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
        log.info("account_logged_out", bot_id=bot_id)

    def set_account_ref(self, bot_id: str, ref: str | None) -> None:
        """Keep the platform's own user id (``ref``) with an account (None clears it)."""
        with self._db.write() as conn:
            result = conn.execute(
                update(accounts)
                .where(accounts.c.bot_id == bot_id)
                .values(ref=ref or None, updated_at=self._db.now())
            )
            if result.rowcount == 0:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
        log.info("account_ref_set", bot_id=bot_id)

    def accounts_by_ref(self, ref: str) -> list[Account]:
        """The accounts kept with ``ref``, most recently used first (any state)."""
        with self._db.lane.read() as cur:
            rows = cur.all(ACCOUNTS_BY_REF, ref=ref)
        return [account_row(r) for r in rows]

    def hand_over(self, new_bot_id: str, old_bot_ids: Sequence[str]) -> int:
        """A new login of the same owner replaces ``old_bot_ids``, in one transaction.

        Each old account is logged out (its history stays readable); its aliases move to
        ``new_bot_id`` (unless the new account already uses the alias or names that user),
        as does the default-account setting when it named one of them,
        and its unsent rows (pending, sending, held, session_expired) move too, as ``held``:
        context tokens belong to the bot that received them, so each row waits until its
        user writes to the new bot, then goes out in order. The new account's own
        ``session_expired`` rows (the server gave back the same bot id) become ``held`` the
        same way. A row whose client_id the new account already has stays where it is.
        Returns the number of rows made ``held``.
        """
        now = self._db.now()
        reason = "kept across a new login: goes out when the user writes to the bot"
        old_ids = [b for b in dict.fromkeys(old_bot_ids) if b != new_bot_id]
        with self._db.write() as conn:
            self._db.require_account(conn, new_bot_id)
            moved = 0
            for old in old_ids:
                conn.execute(
                    update(accounts)
                    .where(accounts.c.bot_id == old)
                    .values(
                        token=None,
                        token_saved_at=None,
                        state=AccountState.LOGGED_OUT.value,
                        updated_at=now,
                    )
                )
                move_aliases(self._db, conn, old, new_bot_id)
                clash = outbox.alias("clash")
                moved += conn.execute(
                    update(outbox)
                    .where(
                        outbox.c.bot_id == old,
                        outbox.c.state.in_([s.value for s in UNSENT]),
                        ~exists().where(
                            clash.c.bot_id == new_bot_id, clash.c.client_id == outbox.c.client_id
                        ),
                    )
                    .values(
                        bot_id=new_bot_id,
                        state=OutboxState.HELD.value,
                        last_error=reason,
                        claimed_until=None,
                        claimed_by=None,
                        updated_at=now,
                    )
                ).rowcount
            if old_ids:  # a default that named a replaced account follows the owner
                conn.execute(
                    update(settings)
                    .where(settings.c.key == _DEFAULT_ACCOUNT_KEY, settings.c.value.in_(old_ids))
                    .values(value=new_bot_id, updated_at=now)
                )
            moved += conn.execute(
                update(outbox)
                .where(
                    outbox.c.bot_id == new_bot_id,
                    outbox.c.state == OutboxState.SESSION_EXPIRED.value,
                )
                .values(state=OutboxState.HELD.value, last_error=reason, updated_at=now)
            ).rowcount
        log.info("account_handed_over", bot_id=new_bot_id, replaced=old_ids, held=moved)
        return moved

    def touch_account(self, bot_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                update(accounts)
                .where(accounts.c.bot_id == bot_id)
                .values(last_used_at=self._db.now())
            )

    def local_tokens(self, limit: int = 10) -> list[str]:
        """Non-empty stored tokens, newest registration first (for ``local_token_list``)."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(accounts.c.token)
                .where(accounts.c.token.is_not(None), accounts.c.token != "")
                .order_by(accounts.c.created_at.desc(), accounts.c.bot_id.desc())
                .limit(limit)
            ).scalars()
            return [str(t) for t in rows]

    def delete_account(self, bot_id: str) -> bool:
        """Remove the account and everything kept for it. True if it existed."""
        with self._db.write() as conn:
            conn.execute(delete(leases).where(leases.c.bot_id == bot_id))
            # Children first: do not depend on ON DELETE CASCADE having been honoured.
            for table in (user_data, outbox, inbox, peers, cursors):
                conn.execute(delete(table).where(table.c.bot_id == bot_id))
            result = conn.execute(delete(accounts).where(accounts.c.bot_id == bot_id))
            existed = result.rowcount > 0
        if existed:
            log.info("account_deleted", bot_id=bot_id)
        return existed

    def default_account(self) -> str | None:
        """The bot id chosen with :meth:`set_default_account`, or None. It may name an
        account that has since logged out or been deleted: callers say so, never skip it."""
        with self._db.lane.read() as cur:  # read by every push: on the driver lane
            value = cur.scalar(_SETTING, key=_DEFAULT_ACCOUNT_KEY)
        return str(value) if value is not None else None

    def set_default_account(self, bot_id: str | None) -> None:
        """Make ``bot_id`` (an existing account) the default of pushes; None clears it."""
        with self._db.write() as conn:
            if bot_id is None:
                conn.execute(delete(settings).where(settings.c.key == _DEFAULT_ACCOUNT_KEY))
            else:
                self._db.require_account(conn, bot_id)
                stmt = self._db.insert(settings).values(
                    key=_DEFAULT_ACCOUNT_KEY, value=bot_id, updated_at=self._db.now()
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[settings.c.key],
                        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
                    )
                )
        log.info("default_account", bot_id=bot_id)

    # ------------------------------------------------------------------ pending QR login

    def save_pending_login(
        self,
        *,
        qrcode: str,
        qr_url: str,
        poll_base: str,
        png_path: str | Path | None,
        issued_at: datetime,
    ) -> PendingLogin:
        """Remember the QR login in progress (one at a time; a new one replaces it)."""
        login = PendingLogin(
            qrcode=qrcode,
            qr_url=qr_url,
            poll_base=poll_base,
            png_path=str(png_path) if png_path is not None else None,
            issued_at=require_aware(issued_at, "issued_at"),
        )
        values = {
            "qrcode": login.qrcode,
            "qr_url": login.qr_url,
            "poll_base": login.poll_base,
            "png_path": login.png_path,
            "issued_at": login.issued_at,
        }
        stmt = self._db.insert(pending_login).values(id=1, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[pending_login.c.id], set_=values)
        with self._db.write() as conn:
            conn.execute(stmt)
        return login

    def get_pending_login(self) -> PendingLogin | None:
        with self._db.read() as conn:
            row = (
                conn.execute(select(pending_login).where(pending_login.c.id == 1))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return PendingLogin(
            qrcode=row["qrcode"],
            qr_url=row["qr_url"],
            poll_base=row["poll_base"],
            png_path=row["png_path"],
            issued_at=row["issued_at"],
        )

    def clear_pending_login(self) -> None:
        with self._db.write() as conn:
            conn.execute(delete(pending_login))

    # ------------------------------------------------------------------ polling leases

    def acquire_lease(self, bot_id: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the account's polling lease; True if it is now ``owner``'s.

        Succeeds when the lease is free, expired (a crashed holder) or already ``owner``'s.
        """
        now = self._db.now()
        expires = now + timedelta(seconds=ttl_seconds)
        stmt = self._db.insert(leases).values(
            bot_id=bot_id, owner=owner, acquired_at=now, expires_at=expires
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[leases.c.bot_id],
            set_={
                "owner": stmt.excluded.owner,
                "acquired_at": case(
                    (leases.c.owner == stmt.excluded.owner, leases.c.acquired_at),
                    else_=stmt.excluded.acquired_at,
                ),
                "expires_at": stmt.excluded.expires_at,
            },
            where=(leases.c.owner == stmt.excluded.owner) | (leases.c.expires_at < now),
        ).returning(leases.c.owner)
        with self._db.write() as conn:
            got = conn.execute(upsert).scalar_one_or_none()
        return got is not None

    def renew_leases(self, owner: str, ttl_seconds: float) -> set[str]:
        """Extend every live lease ``owner`` holds by ``ttl_seconds``, in one statement (a
        worker polling 1,000 accounts renews them together); the accounts still held."""
        now = self._db.now()
        with self._db.write() as conn:
            held = conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.expires_at >= now)
                .values(expires_at=now + timedelta(seconds=ttl_seconds))
                .returning(leases.c.bot_id)
            ).scalars()
            return {str(bot_id) for bot_id in held}

    def unpolled_accounts(self) -> set[str]:
        """Active accounts (with a token) that nobody holds a live polling lease on."""
        now = self._db.now()
        live = select(leases.c.bot_id).where(leases.c.expires_at >= now)
        with self._db.read() as conn:
            found = conn.execute(
                select(accounts.c.bot_id).where(
                    accounts.c.state == AccountState.ACTIVE.value,
                    accounts.c.token.is_not(None),
                    accounts.c.bot_id.not_in(live),
                )
            ).scalars()
            return {str(bot_id) for bot_id in found}

    def release_lease(self, bot_id: str, owner: str) -> None:
        with self._db.write() as conn:
            conn.execute(delete(leases).where(leases.c.bot_id == bot_id, leases.c.owner == owner))

    def heartbeat_worker(self, owner: str, ttl_seconds: float) -> int:
        """Say ``owner`` (a running receive loop) is alive for ``ttl_seconds`` more, forget
        workers whose heartbeat ran out, and return how many are alive, ``owner`` included."""
        now = self._db.now()
        stmt = self._db.insert(workers).values(
            owner=owner, seen_at=now, expires_at=now + timedelta(seconds=ttl_seconds)
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[workers.c.owner],
            set_={"seen_at": stmt.excluded.seen_at, "expires_at": stmt.excluded.expires_at},
        )
        with self._db.write() as conn:
            conn.execute(stmt)
            conn.execute(delete(workers).where(workers.c.expires_at < now))
            alive = conn.execute(select(func.count()).select_from(workers)).scalar_one()
        return int(alive)

    def retire_worker(self, owner: str) -> None:
        """``owner`` stops: the others take its share at once instead of after its TTL."""
        with self._db.write() as conn:
            conn.execute(delete(workers).where(workers.c.owner == owner))

    def counts(self) -> dict[str, Any]:
        """What a status page or ``/metrics`` needs, in a few aggregate reads however many
        accounts there are: accounts and outbox rows by state, dead inbox rows, polling
        leases held and live workers."""
        now = self._db.now()
        with self._db.read() as conn:
            by_state = conn.execute(
                select(accounts.c.state, func.count()).group_by(accounts.c.state)
            ).all()
            out_state = conn.execute(
                select(outbox.c.state, func.count()).group_by(outbox.c.state)
            ).all()
            dead = conn.execute(
                select(func.count()).select_from(inbox).where(inbox.c.dead_at.is_not(None))
            ).scalar_one()
            polled = conn.execute(
                select(func.count()).select_from(leases).where(leases.c.expires_at >= now)
            ).scalar_one()
            alive = conn.execute(
                select(func.count()).select_from(workers).where(workers.c.expires_at >= now)
            ).scalar_one()
        return {
            "accounts": {str(state): int(n) for state, n in by_state},
            "outbox": {str(state): int(n) for state, n in out_state},
            "dead_inbox": int(dead),
            "polled_accounts": int(polled),
            "workers": int(alive),
        }

    def lease_holder(self, bot_id: str) -> str | None:
        """The current holder, or None if the lease is free or expired."""
        with self._db.lane.read() as cur:
            value = cur.scalar(LEASE_HOLDER, bot_id=bot_id, now=self._db.now())
        return str(value) if value is not None else None
