"""The outbox: every outgoing message is a stored row first, then delivered honestly.

A row keeps its ``client_id`` from creation through every retry (whether the server drops a
repeated one is unknown; delivery is at-least-once either way). A row that cannot go out
because the reply window is closed (predicted, or answered ``ret=-2``) is *held*, never
dropped and never reported as delivered; when that user writes again, held rows go out
first, in order. A row that met ``-14`` (stale bot token) is kept as *session_expired*; the
owner's next login hands it to the new account as held (``Store.hand_over``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ilinkbot.ilink import (
    ApiError,
    HttpStatusError,
    IlinkError,
    ReplyWindowClosed,
    SessionExpired,
    build_send_body,
)
from ilinkbot.ilink.log import get_logger
from ilinkbot.store import Account, ClaimedSend, OutboxRow, Peer, Store

from .errors import NoContextError
from .events import Events
from .metrics import METRICS
from .payloads import (
    ItemPayload,
    Payload,
    TextPayload,
    payload_from_json,
    text_payloads,
)
from .service import Service
from .waiting import backoff, pause
from .window import window_state

__all__ = [
    "MessageOutcome",
    "Outbox",
    "SendResult",
    "messageable_peer",
]

_log = get_logger("ilinkbot.outbox")

#: Tries of one row within one delivery pass (the row's stored client_id is reused).
TRIES_PER_PASS = 4
#: How long ``submit`` waits for its rows when another sender has the user's earlier rows
#: in flight, before reporting them as still pending.
SUBMIT_WAIT_SECONDS = 30.0

# Overall state of a multi-message send: the worst one wins.
_SEVERITY = ["delivered", "unconfirmed", "held", "pending", "failed", "session_expired"]
_OUTCOME_OF_STATE = {"sent": "delivered", "sending": "pending", "dead": "failed"}
_EXPIRED_REASON = (
    "the bot session expired (-14): kept in the outbox; after `ilinkbot login` it goes out "
    "when the user writes again"
)


@dataclass(frozen=True)
class MessageOutcome:
    outbox_id: int
    user_id: str
    client_id: str
    state: str  # delivered | held | unconfirmed | pending | failed | session_expired
    message_id: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.outbox_id,
            "to": self.user_id,
            "client_id": self.client_id,
            "state": self.state,
            "message_id": self.message_id,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SendResult:
    """What happened to one send: ``state`` is the worst outcome of its messages."""

    state: str
    messages: list[MessageOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only when every message was delivered (the server gave a message_id)."""
        return self.state == "delivered"

    @property
    def client_ids(self) -> list[str]:
        return [m.client_id for m in self.messages]

    @property
    def message_ids(self) -> list[str | None]:
        return [m.message_id for m in self.messages]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "state": self.state,
            "client_ids": self.client_ids,
            "message_ids": self.message_ids,
            "messages": [m.to_dict() for m in self.messages],
        }

    @classmethod
    def combine(cls, outcomes: Sequence[MessageOutcome]) -> SendResult:
        worst = max((o.state for o in outcomes), key=_SEVERITY.index, default="delivered")
        return cls(state=worst, messages=list(outcomes))


class Outbox:
    """Stores and delivers messages for the accounts of one :class:`Service`."""

    def __init__(self, service: Service, *, events: Events | None = None) -> None:
        self.svc = service
        #: Told of every row's new state (``serve --webhook``).
        self.events = events or Events()
        self.store = service.store
        self.config = service.config
        #: Called with (bytes_done, total) during uploads (CLI progress bar).
        self.progress: Callable[[int, int], None] | None = None

    # ---- public -----------------------------------------------------------------------

    async def submit(
        self,
        account: Account,
        user_id: str,
        payloads: Sequence[Payload],
        *,
        client_ids: Sequence[str] | None = None,
        deliver: bool = True,
        peer: Peer | None = None,
    ) -> SendResult:
        """Store ``payloads`` for ``user_id`` (one row each), then deliver them in order.

        ``peer``: the user's peer as the caller just read it (a push resolving its
        recipient), which saves reading it again; read here when not given."""
        store = self.store
        check_peer = functools.partial(messageable_peer, store, account.bot_id, user_id)
        if not deliver:
            await self.svc.read(check_peer)
            queued = await self.svc.call(
                store.enqueue, account.bot_id, user_id, _stored(payloads), client_ids=client_ids
            )
            return SendResult.combine(
                [MessageOutcome(r.id, r.user_id, r.client_id, "pending") for r in queued]
            )

        send = ClaimedSend(account.bot_id, user_id, _stored(payloads), client_ids)
        if peer is None or peer.user_id != user_id or not peer.context_token:
            peer = await self.svc.read(check_peer)
        stored: tuple[list[OutboxRow], list[OutboxRow]] | None = None

        async def store_while_waiting() -> None:
            # Another send of this process has been going out to this user for a while:
            # store the rows now, so that they are kept whatever happens while this one
            # waits; unclaimed, so that whoever has the turn meanwhile sends them in order.
            nonlocal stored
            stored = await self.svc.enqueue_send(replace(send, claim=False))

        async with self.svc.user_turn(account.bot_id, user_id, meanwhile=store_while_waiting):
            if stored is None:
                # Usually nothing else waits for this user: the rows come back claimed.
                rows, claimed = await self.svc.enqueue_send(send)
            else:
                rows, _ = stored
                peer = await self.svc.read(check_peer)  # the sends before us changed it
                claimed = await self.svc.write(
                    store.claim_next,
                    account.bot_id,
                    user_id,
                    [r.id for r in rows],
                    lease_seconds=self.config.send_lease_seconds,
                )
            ids = {r.id for r in rows}
            mine: dict[int, MessageOutcome] = {}
            peers = {user_id: peer}
            outcomes = (
                await self.drain(account, user_id, claimed=claimed, peers=peers) if claimed else []
            )
            deadline = asyncio.get_running_loop().time() + SUBMIT_WAIT_SECONDS
            passes = 0
            while True:
                mine.update((o.outbox_id, o) for o in outcomes if o.outbox_id in ids)
                # This pass stopped the user's queue itself (a transient failure, a hold):
                # whatever of ours is still pending stays so, and that is the answer.
                stopped = any(
                    o.user_id == user_id and o.state != "delivered" and o.state != "unconfirmed"
                    for o in outcomes
                )
                for i in ids - mine.keys():
                    o = await self.outcome(i)
                    if o.state not in ("pending", "sending") or (stopped and o.state == "pending"):
                        mine[i] = o
                if len(mine) == len(ids) or asyncio.get_running_loop().time() > deadline:
                    break
                if passes:
                    await asyncio.sleep(0.05)  # another sender has this user's rows in flight
                passes += 1
                # a later pass reads the peer again: another pass may have sent meanwhile
                outcomes = await self.drain(account, user_id)
            result = [mine.get(r.id) or await self.outcome(r.id) for r in rows]
            return SendResult.combine(result)

    async def keep(
        self,
        account: Account,
        user_id: str,
        payloads: Sequence[Payload],
        *,
        client_ids: Sequence[str] | None = None,
    ) -> SendResult:
        """The account's session is known to be expired: store ``payloads`` for ``user_id``
        as ``session_expired`` without sending (the next login takes them over)."""
        store = self.store
        await self.svc.read(messageable_peer, store, account.bot_id, user_id)
        kept = await self.svc.call(
            store.enqueue,
            account.bot_id,
            user_id,
            _stored(payloads),
            client_ids=client_ids,
            state="session_expired",
        )
        return SendResult.combine(
            [
                MessageOutcome(
                    r.id, r.user_id, r.client_id, "session_expired", reason=_EXPIRED_REASON
                )
                for r in kept
            ]
        )

    async def drain(
        self,
        account: Account,
        user_id: str | None = None,
        *,
        claimed: Sequence[Any] | None = None,
        peers: dict[str, Any] | None = None,
    ) -> list[MessageOutcome]:
        """Deliver every pending row of the account (or of one user), oldest first.

        ``claimed``: rows the caller already claimed; they are delivered and the pass ends.
        Per user, order is kept: after a row is held, that user's later rows are held
        behind it; after a transient failure they stay pending for the next pass.
        """
        peers = peers if peers is not None else {}
        sent: list[tuple[int, str | None]] = []
        inflight: set[int] = set()
        try:
            return await self._drain(account, user_id, claimed, peers, sent, inflight)
        finally:
            try:
                # Delivered rows are marked together, once per pass: a crash before this
                # line re-sends them after their lease with the same client_id
                # (at-least-once: whether the server drops a repeated client_id is unknown).
                if sent:
                    await self.svc.mark_sent(sent)
            finally:
                # Interrupted (Ctrl-C, SIGTERM, an error): claims not finished go back to
                # pending now, so the next sender need not wait out their lease. Done
                # in place: a cancelled task must not wait for a thread.
                for outbox_id in sorted(inflight):
                    self.store.unclaim(outbox_id)

    async def _drain(
        self,
        account: Account,
        user_id: str | None,
        claimed: Sequence[Any] | None,
        peers: dict[str, Any],
        sent: list[tuple[int, str | None]],
        inflight: set[int],
    ) -> list[MessageOutcome]:
        """``inflight``: ids claimed in this pass and not yet settled (see :meth:`drain`)."""
        outcomes: list[MessageOutcome] = []
        held_users: set[str] = set()
        waiting_users: set[str] = set()
        seen: set[int] = set()
        limit = 50
        rows = list(claimed or [])
        while True:
            if not rows:
                rows = await self.svc.call(
                    self.store.claim,
                    account.bot_id,
                    limit=limit,
                    user_id=user_id,
                    lease_seconds=self.config.send_lease_seconds,
                )
                if not rows:
                    return outcomes
            inflight.update(r.id for r in rows)
            more = claimed is None and len(rows) >= limit
            for i, row in enumerate(rows):
                if row.id in seen or row.user_id in waiting_users:
                    await self.svc.call(self.store.unclaim, row.id)
                    inflight.discard(row.id)
                    continue
                seen.add(row.id)
                if row.user_id in held_users:
                    reason = "queued behind a held message to the same user"
                    await self.svc.call(self.store.mark_held, row.id, reason)
                    inflight.discard(row.id)
                    outcomes.append(
                        MessageOutcome(row.id, row.user_id, row.client_id, "held", reason=reason)
                    )
                    continue
                try:
                    outcome = await self._deliver(account, row, peers, sent)
                except SessionExpired:
                    left = [r for r in rows[i:] if r.id not in seen or r.id == row.id]
                    await self._session_expired(account, left)
                    inflight.difference_update(r.id for r in left)
                    outcomes.extend(
                        MessageOutcome(
                            r.id, r.user_id, r.client_id, "session_expired", reason=_EXPIRED_REASON
                        )
                        for r in left
                    )
                    return outcomes
                inflight.discard(row.id)
                outcomes.append(outcome)
                if outcome.state == "held":
                    held_users.add(row.user_id)
                elif outcome.state == "pending":
                    waiting_users.add(row.user_id)
            if not more:
                return outcomes
            rows = []

    async def release(self, account: Account, user_id: str) -> list[MessageOutcome]:
        """The user just wrote: held rows go back to pending and are delivered first, in
        order."""
        if not await self.unhold(account, user_id):
            return []
        return await self.drain(account, user_id)

    async def unhold(self, account: Account, user_id: str) -> bool:
        """Held rows of ``user_id`` go back to pending (merged into one digest when
        ``held_digest`` is on), ahead of anything sent after; whether there were any."""
        released = await self.svc.call(self.store.release_held, account.bot_id, user_id)
        if self.config.held_digest and len(released) > 1:
            await self._merge_into_digest(account, user_id, released)
        return bool(released)

    # ---- one row -----------------------------------------------------------------------

    async def _deliver(
        self,
        account: Account,
        row: OutboxRow,
        peers: dict[str, Any],
        sent: list[tuple[int, str | None]],
    ) -> MessageOutcome:
        def done(
            state: str, message_id: str | None = None, reason: str | None = None
        ) -> MessageOutcome:
            _log.info(
                "outbox_row",
                id=row.id,
                to=row.user_id,
                client_id=row.client_id,
                state=state,
                message_id=message_id,
                reason=reason,
            )
            outcome = MessageOutcome(row.id, row.user_id, row.client_id, state, message_id, reason)
            self.events.delivery_changed(account, outcome)
            return outcome

        # The peer is read once per pass and counted locally after each send (the store
        # counts too, in mark_sent); a user who wrote meanwhile only widens the window.
        peer = peers.get(row.user_id)
        if peer is None:
            peer = await self.svc.read(self.store.get_peer, account.bot_id, row.user_id)
            peers[row.user_id] = peer
        win = window_state(
            peer, quota=self.config.reply_quota, window_seconds=self.config.reply_window_seconds
        )
        if not win.open:
            await self.svc.call(self.store.mark_held, row.id, win.reason or "window closed")
            return done("held", reason=win.reason)

        client = self.svc.client(account)
        try:
            item = await self._item(account, client, row)
        except (OSError, ValueError) as exc:
            await self.svc.call(
                self.store.mark_failed,
                row.id,
                f"bad payload: {exc}",
                retryable=False,
                max_attempts=self.config.send_max_attempts,
            )
            return done("failed", reason=str(exc))
        except SessionExpired:
            raise  # -14 on getuploadurl: the whole pass stops, as on sendmessage
        except IlinkError as exc:
            return await self._failed(row, exc, done)

        msg = build_send_body(
            row.user_id,
            item,
            client_id=row.client_id,
            context_token=peer.context_token,
            run_id=(row.payload or {}).get("run_id"),
        )
        last: IlinkError | None = None
        for attempt in range(1, TRIES_PER_PASS + 1):
            started = time.perf_counter()
            try:
                ack = await client.send_message(msg)
                METRICS.observe_send(time.perf_counter() - started)
            except ReplyWindowClosed as exc:
                reason = f"server refused: ret={exc.ret} {exc.errmsg or ''}".strip()
                await self.svc.call(self.store.mark_held, row.id, reason)
                return done("held", reason=reason)
            except SessionExpired:
                raise
            except IlinkError as exc:
                last = exc
                if not _retryable(exc) or attempt == TRIES_PER_PASS:
                    break
                _log.warning("send_retry", id=row.id, attempt=attempt, error=str(exc))
                await pause(backoff(attempt))
                continue
            peers[row.user_id] = peer.after_sends(1)
            if ack.confirmed:
                sent.append((row.id, ack.message_id))
                return done("delivered", ack.message_id)
            reason = "the server answered ret=0 without a message_id: delivery not confirmed"
            await self.svc.call(self.store.mark_unconfirmed, row.id, reason)
            return done("unconfirmed", reason=reason)
        assert last is not None
        return await self._failed(row, last, done)

    async def _failed(
        self, row: OutboxRow, exc: IlinkError, done: Callable[..., MessageOutcome]
    ) -> MessageOutcome:
        retryable = _retryable(exc)
        updated = await self.svc.call(
            self.store.mark_failed,
            row.id,
            str(exc),
            retryable=retryable,
            max_attempts=self.config.send_max_attempts,
        )
        state = getattr(updated, "state", None) or ("pending" if retryable else "failed")
        return done("pending" if state == "pending" else "failed", reason=str(exc))

    async def _item(self, account: Account, client: Any, row: OutboxRow) -> dict[str, Any]:
        payload = payload_from_json(row.payload)
        if isinstance(payload, TextPayload | ItemPayload):
            return payload.to_json()["item"]  # type: ignore[no-any-return]
        from ilinkbot.cdn import MediaKind, UploadedMedia, upload_media

        if payload.upload:
            uploaded = UploadedMedia.from_dict(payload.upload)
        else:
            uploaded = await upload_media(
                client,
                self.config.cdn_base_url,
                Path(payload.path),
                to_user_id=row.user_id,
                kind=MediaKind(payload.kind) if payload.kind else None,
                file_name=payload.file_name,
                progress=self.progress,
            )
            # Keep the upload with the row: a retried send does not upload again.
            kept = payload.uploaded(uploaded.to_dict()).to_json()
            await self.svc.call(self.store.update_outbox_payload, row.id, kept)
        return uploaded.to_item()

    async def _session_expired(self, account: Account, rows: Sequence[OutboxRow]) -> None:
        await self.svc.mark_expired(account.bot_id)
        _log.info("kept_for_next_login", account=account.bot_id, messages=len(rows))
        reason = "session expired (-14)"
        await self.svc.call(self.store.mark_session_expired, [r.id for r in rows], reason)
        for r in rows:
            outcome = MessageOutcome(r.id, r.user_id, r.client_id, "session_expired", None, reason)
            self.events.delivery_changed(account, outcome)

    async def _merge_into_digest(
        self, account: Account, user_id: str, rows: Sequence[OutboxRow]
    ) -> None:
        held = [payload_from_json(r.payload) for r in rows]
        texts = [p.text for p in held if isinstance(p, TextPayload)]
        if len(texts) != len(held):
            return  # media rows are never merged
        header = f"{len(rows)} messages held while the chat was inactive:"
        digest = header + "".join(f"\n\n— {t}" for t in texts)
        payloads = _stored(text_payloads(digest, chunk_size=self.config.chunk_size))
        await self.svc.call(self.store.enqueue, account.bot_id, user_id, payloads, group="digest")
        for r in rows:
            await self.svc.call(self.store.drop_outbox, r.id)

    async def outcome(self, outbox_id: int) -> MessageOutcome:
        """A row's state as a send outcome (``sent`` is ``delivered``; a row another sender
        has in flight is still ``pending``; a dropped one is ``failed``)."""
        row = await self.svc.read(self.store.get_outbox, outbox_id)
        state = _OUTCOME_OF_STATE.get(row.state, row.state)
        reason = row.last_error or ("dropped" if row.state == "dead" else None)
        return MessageOutcome(row.id, row.user_id, row.client_id, state, row.message_id, reason)


def messageable_peer(store: Store, bot_id: str, user_id: str) -> Peer:
    """The user's peer, or :class:`NoContextError` when they never wrote (no context token:
    the bot cannot message them). A blocking read, for :meth:`Service.read`."""
    peer = store.get_peer(bot_id, user_id)
    if peer is None or not peer.context_token:
        raise NoContextError(user_id)
    return peer


def _retryable(exc: IlinkError) -> bool:
    if isinstance(exc, HttpStatusError):
        return exc.status >= 500 or exc.status in (408, 429)
    if isinstance(exc, ApiError):
        return False
    return exc.retryable


def _stored(payloads: Sequence[Payload]) -> list[dict[str, Any]]:
    """What the store keeps of each payload (JSON)."""
    return [p.to_json() for p in payloads]
