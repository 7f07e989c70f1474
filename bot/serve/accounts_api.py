"""The accounts API of ``ilinkbot serve`` (``/v1``), for platforms that bind many users.

* ``POST /v1/logins`` ``{"ref": "user-42"}``: start a login (several may run at once) and
  answer its QR code; ``GET /v1/logins/{id}``: its status; ``POST /v1/logins/{id}/code``:
  the number the phone shows.
* ``GET /v1/accounts[?ref=]``: the accounts (never their tokens); ``DELETE /v1/accounts/{id}``:
  log one out (its history stays); ``POST /v1/accounts/{id}/push[/{alias}]`` and
  ``POST /push?ref=``: a push as ``/push`` does it, from that account.

``ref`` is the platform's own user id, kept with the account a login binds; a new login
with the same ref (or by the same WeChat owner) replaces the older account
(:func:`bot.login.run_login`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ilinkbot.store import Account

from ..accounts import find_account
from ..errors import AmbiguousAccount, UnknownAccount
from ..service import Service
from ..status import iso
from .bodies import BodyError, load_json
from .errors import ApiError
from .weblogin import Logins, UnknownLogin, WebLogin

__all__ = ["MAX_REF_LENGTH", "account_json", "api_routes", "login_json", "push_account"]

MAX_REF_LENGTH = 255

#: The page's login states as the protocol's QR statuses (PROTOCOL.md §2.2), for platforms.
_STATUS = {
    "starting": "starting",
    "wait": "wait",
    "scanned": "scaned",
    "checking_code": "checking_code",  # the number was sent, the server has not answered
    "verify_code": "need_verifycode",
    "verify_code_wrong": "need_verifycode",
    "expired": "expired",  # a new QR code follows while any are left
    "verify_blocked": "verify_code_blocked",
    "done": "confirmed",
    "already_bound": "binded_redirect",
    "failed": "failed",
}

Handler = Callable[[Request], Awaitable[Response]]


def _ref(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BodyError('expected {"ref": "YOUR-USER-ID"} (a non-empty string)')
    if len(value) > MAX_REF_LENGTH or any(ord(c) < 32 for c in value):
        raise BodyError(f"ref: at most {MAX_REF_LENGTH} printable characters")
    return value


def account_json(acc: Account) -> dict[str, Any]:
    """An account as the API shows it: never its token."""
    return {
        "id": acc.bot_id,
        "ref": acc.ref,
        "owner": acc.owner_user_id,
        "state": str(acc.state),
        "created_at": iso(acc.created_at),
        "last_used_at": iso(acc.last_used_at),
    }


def login_json(login_id: str, web: WebLogin) -> dict[str, Any]:
    page = web.state.to_dict()
    return {
        "ok": page["ok"],
        "id": login_id,
        "ref": web.ref,
        "status": _STATUS.get(page["state"], page["state"]),
        "message": page["message"],
        "qr_image": page["qr_image"],
        "qr_url": page["qr_url"],
        "qr_number": page["qr_number"],
        "qr_max": page["qr_max"],
        "needs_code": page["needs_code"],
        "done": page["done"],
        "account": page["account"],
        "owner": page["owner"],
        "reason": page["reason"],
    }


def _account_for_ref(store: Any, ref: str) -> str:
    """The one active account kept with ``ref``; else the newest one, so that the push says
    why it cannot go (expired, logged out). Several active ones: ambiguous, never a guess."""
    found = store.accounts_by_ref(ref)
    if not found:
        raise UnknownAccount(f"no account with ref {ref!r}; start one with POST /v1/logins")
    active = [a for a in found if a.state == "active" and a.token]
    if len(active) > 1:
        names = ", ".join(a.bot_id for a in active)
        raise AmbiguousAccount(
            f"several accounts have ref {ref!r} ({names}); push with /v1/accounts/ID/push"
        )
    return str((active or found)[0].bot_id)


async def push_account(svc: Service, path: Mapping[str, Any], query: Mapping[str, str]) -> Any:
    """The account a push names: ``/v1/accounts/{account}/push``, ``?ref=`` or ``?account=``
    (None: the usual choice of ``/push``). Naming two ways is refused."""
    named = [k for k in ("account", "ref") if path.get(k) or query.get(k)]
    if len(named) > 1 or (path.get("account") and query.get("account")):
        raise BodyError("name the account once: by path, ?account= or ?ref=")
    if path.get("account"):
        return path["account"]
    if query.get("ref"):
        return await svc.read(_account_for_ref, svc.store, _ref(query["ref"]))
    return query.get("account") or None


def api_routes(
    svc: Callable[[], Service],
    logins: Logins,
    guarded: Callable[[Handler], Handler],
    read_body: Callable[[Request, int], Awaitable[bytes]],
    push_route: Handler,
) -> list[Route]:
    """The ``/v1`` routes (all need the bearer token, via ``guarded``)."""

    def login_of(request: Request) -> tuple[str, WebLogin]:
        login_id = request.path_params["login"]
        web = logins.get(login_id)
        if web is None:
            raise UnknownLogin(f"no login {login_id!r} (unknown, or finished long ago)")
        return login_id, web

    async def start(request: Request) -> Response:
        body = await read_body(request, 4096)
        data = load_json(body or b"{}")
        if not isinstance(data, dict):
            raise BodyError('expected {"ref": "YOUR-USER-ID"}')
        ref = _ref(data.get("ref"))
        login_id, web = logins.start(ref)
        await web.wait_for_qr()
        return JSONResponse(login_json(login_id, web), status_code=201)

    async def status(request: Request) -> Response:
        login_id, web = login_of(request)
        web.status()  # watched: not abandoned
        return JSONResponse(login_json(login_id, web), headers={"Cache-Control": "no-store"})

    async def code(request: Request) -> Response:
        login_id, web = login_of(request)
        body = await read_body(request, 4096)
        data = load_json(body or b"{}")
        value = data.get("code") if isinstance(data, dict) else None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise BodyError('expected {"code": "NUMBER"}')
        try:
            web.submit_code(str(value))
        except ValueError as exc:
            raise BodyError(str(exc)) from None
        except LookupError as exc:
            raise ApiError(409, f"login {login_id}: {exc}") from None
        return JSONResponse(login_json(login_id, web))

    async def accounts(request: Request) -> Response:
        service = svc()
        ref = request.query_params.get("ref")
        if ref is not None:
            found = await service.read(service.store.accounts_by_ref, _ref(ref))
        else:
            found = await service.read(service.store.list_accounts)
        return JSONResponse({"ok": True, "accounts": [account_json(a) for a in found]})

    async def disconnect(request: Request) -> Response:
        service = svc()
        wanted = request.path_params["account"]
        acc = await service.read(find_account, service.store, wanted)
        if acc is None:
            raise UnknownAccount(f"no account {wanted!r}; see GET /v1/accounts")
        await service.call(service.store.logout, acc.bot_id)
        acc = await service.read(service.store.get_account, acc.bot_id)
        return JSONResponse({"ok": True, "account": account_json(acc)})

    return [
        Route("/v1/logins", guarded(start), methods=["POST"]),
        Route("/v1/logins/{login}", guarded(status), methods=["GET"]),
        Route("/v1/logins/{login}/code", guarded(code), methods=["POST"]),
        Route("/v1/accounts", guarded(accounts), methods=["GET"]),
        Route("/v1/accounts/{account}", guarded(disconnect), methods=["DELETE"]),
        Route("/v1/accounts/{account}/push", guarded(push_route), methods=["POST", "PUT"]),
        Route("/v1/accounts/{account}/push/{alias}", guarded(push_route), methods=["POST", "PUT"]),
    ]
