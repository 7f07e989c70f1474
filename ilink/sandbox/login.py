"""QR login (PROTOCOL.md §2): get_bot_qrcode, the get_qrcode_status long poll, and the
phone's side of it (scan, confirm, verify code, redirect to the other IDC, block)."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, Final

from ilinkbot.ilink.log import get_logger

from .model import SandboxError, SandboxResponse, Violation, need
from .state import Bot, QrCode, State

__all__ = ["Login"]

log = get_logger("ilink.sandbox")

QR_TTL_SECONDS: Final = 300.0
MAX_WRONG_VERIFY_CODES: Final = 3
_TERMINAL: Final = frozenset({"confirmed", "binded_redirect", "expired", "verify_code_blocked"})


class Login:
    """QR codes and the bots their confirmation mints, kept in a :class:`~.state.State`."""

    def __init__(self, state: State) -> None:
        self._state = state

    # ------------------------------------------------------------------ reading

    def _tick(self, qr: QrCode) -> None:
        if qr.status not in _TERMINAL and self._state.now() - qr.issued_at >= QR_TTL_SECONDS:
            qr.status = "expired"

    def summary(self, qr: QrCode) -> dict[str, Any]:
        """What the admin API shows of one QR code (lock held)."""
        self._tick(qr)
        return {
            "qrcode": qr.qrcode,
            "status": qr.status,
            "redirected": qr.redirected,
            "verify_code_required": qr.verify_code is not None and qr.status == "need_verifycode",
            "wrong_codes": qr.wrong_codes,
            "issued_at": qr.issued_at,
            "user_id": qr.user_id,
            "bot_id": qr.bot_id,
        }

    def summaries(self) -> list[dict[str, Any]]:
        """Every QR code, oldest first (lock held)."""
        return [self.summary(q) for q in self._state.qrs.values()]

    # ------------------------------------------------------------------ the phone

    def _open_qr(self, qrcode: str | None) -> QrCode:
        st = self._state
        code = qrcode if qrcode is not None else st.newest_qr
        if code is None or code not in st.qrs:
            raise SandboxError("no such QR code" if qrcode else "no QR code was issued yet")
        qr = st.qrs[code]
        self._tick(qr)
        if qr.status in _TERMINAL:
            raise SandboxError(f"QR code is already {qr.status}")
        return qr

    def scan(self, qrcode: str | None) -> dict[str, Any]:
        with self._state.lock:
            qr = self._open_qr(qrcode)
            if qr.status == "wait":
                qr.status = "scaned"
            summary = self.summary(qr)
        self._state.qr_notifier.notify()
        return summary

    def confirm(self, user_id: str, qrcode: str | None) -> dict[str, Any]:
        st = self._state
        with st.lock:
            qr = self._open_qr(qrcode)
            if qr.status == "need_verifycode":
                raise SandboxError("the verify code was not entered yet")
            qr.user_id = user_id
            for token in qr.local_tokens:
                bound = st.by_token.get(token)
                if bound is not None and not bound.expired and bound.owner == user_id:
                    qr.status = "binded_redirect"
                    qr.bot_id = bound.bot_id
                    result = {
                        "status": "binded_redirect",
                        "bot_id": bound.bot_id,
                        "bot_token": bound.token,
                        "user_id": user_id,
                    }
                    break
            else:
                bot = self._new_bot(user_id)
                qr.status = "confirmed"
                qr.bot_id = bot.bot_id
                result = {
                    "status": "confirmed",
                    "bot_id": bot.bot_id,
                    "bot_token": bot.token,
                    "user_id": user_id,
                }
        log.info("sandbox.login", status=result["status"], bot_id=result["bot_id"])
        st.qr_notifier.notify()
        return result

    def _new_bot(self, owner: str) -> Bot:
        st = self._state
        while True:
            hex12 = secrets.token_hex(6)
            bot_id = f"{hex12}@im.bot"
            if bot_id not in st.bots:
                break
        token = f"{hex12}@im.bot:{secrets.token_hex(24)}"
        bot = Bot(
            bot_id=bot_id,
            token=token,
            owner=owner,
            created_at=st.now(),
            tag=hashlib.sha256(bot_id.encode()).digest()[:4],
        )
        st.bots[bot_id] = bot
        st.by_token[token] = bot
        return bot

    def expire(self, qrcode: str | None) -> None:
        with self._state.lock:
            self._open_qr(qrcode).status = "expired"
        self._state.qr_notifier.notify()

    def require_verify_code(self, code: str, qrcode: str | None) -> None:
        with self._state.lock:
            qr = self._open_qr(qrcode)
            qr.verify_code = str(code)
            qr.wrong_codes = 0
            qr.status = "need_verifycode"
        self._state.qr_notifier.notify()

    def redirect(self, qrcode: str | None) -> None:
        with self._state.lock:
            qr = self._open_qr(qrcode)
            qr.redirected = True
            if qr.status == "wait":
                qr.status = "scaned"
        self._state.qr_notifier.notify()

    def block_verify(self, qrcode: str | None) -> None:
        with self._state.lock:
            self._open_qr(qrcode).status = "verify_code_blocked"
        self._state.qr_notifier.notify()

    # ------------------------------------------------------------------ the API

    def get_bot_qrcode(self, obj: dict[str, Any], query: dict[str, list[str]]) -> dict[str, Any]:
        """Issue a QR code (lock held)."""
        st = self._state
        need(query.get("bot_type") == ["3"], "query.bot_type", "bot_type=3 missing")
        tokens = obj.get("local_token_list")
        need(isinstance(tokens, list), "qrcode.local_token_list", "local_token_list missing")
        assert isinstance(tokens, list)
        need(len(tokens) <= 10, "qrcode.local_token_list", "more than 10 tokens")
        need(
            all(isinstance(t, str) and t for t in tokens),
            "qrcode.local_token_list",
            "local_token_list holds a non-string or empty entry",
        )
        code = secrets.token_hex(16)
        st.qrs[code] = QrCode(qrcode=code, issued_at=st.now(), local_tokens=list(tokens))
        st.newest_qr = code
        return {
            "ret": 0,
            "qrcode": code,
            "qrcode_img_content": f"{st.api_base}/_sandbox/qr/{code}",
        }

    def _view(self, qr: QrCode, via_redirect: bool) -> dict[str, Any]:
        st = self._state
        self._tick(qr)
        if qr.redirected and not via_redirect:
            return {"ret": 0, "status": "scaned_but_redirect", "redirect_host": st.redirect_host}
        view: dict[str, Any] = {"ret": 0, "status": qr.status}
        if qr.status == "confirmed" and qr.bot_id in st.bots:
            bot = st.bots[qr.bot_id]
            view.update(
                {
                    "bot_token": bot.token,
                    "ilink_bot_id": bot.bot_id,
                    "baseurl": st.api_base,
                    "ilink_user_id": bot.owner,
                }
            )
        return view

    async def qr_status(self, query: dict[str, list[str]], via_redirect: bool) -> SandboxResponse:
        """Long poll: answer when the status differs from the last answer, or at the end."""
        st = self._state
        codes = query.get("qrcode")
        if not codes or not codes[0]:
            raise Violation("query.qrcode", "qrcode missing")
        code = codes[0]
        verify = query.get("verify_code", [None])[0]
        force = False
        with st.lock:
            qr = st.qrs.get(code)
            if qr is None:
                return SandboxResponse.json({"ret": 0, "status": "expired"})
            self._tick(qr)
            real_view = via_redirect or not qr.redirected
            if verify is not None and qr.status == "need_verifycode" and real_view:
                if verify == qr.verify_code:
                    qr.status = "scaned"
                    qr.verify_code = None
                else:
                    qr.wrong_codes += 1
                    force = True
                    if qr.wrong_codes >= MAX_WRONG_VERIFY_CODES:
                        qr.status = "verify_code_blocked"
        deadline = time.monotonic() + st.qr_poll_seconds
        while True:
            with st.lock:
                view = self._view(qr, via_redirect)
                status = view["status"]
                last = qr.answered.get(via_redirect)
                if force or status != last or status in _TERMINAL or time.monotonic() >= deadline:
                    qr.answered[via_redirect] = status
                    return SandboxResponse.json(view)
                generation = st.qr_notifier.generation
            await st.qr_notifier.wait(generation, deadline - time.monotonic())
