"""The control API under ``/sandbox/`` (JSON, no bearer token) and the phone pages. Served on every port.

=====================================================  ===========================================================
``GET  /sandbox``                                      ports, URLs, public key, service provider code
``POST /sandbox/reset``                                forget transactions, references, deliveries and faults;
                                                       restore the delays/callback settings started with
``GET  /sandbox/config``                               delays and callback settings
``PUT|POST /sandbox/config``                           change some of them (JSON object, unknown fields: 400)
``GET  /sandbox/faults``, ``PUT|POST /sandbox/faults``  callback faults (duplicate/drop/delay) and response faults
                                                       of the next C2B requests and status queries
``GET  /sandbox/transactions``                         every transaction (``?status=Pending``, ``?msisdn=``)
``GET  /sandbox/callbacks``                            the delivery log
``GET  /sandbox/phone/<msisdn>``                       the phone page (HTML)
``GET  /sandbox/phone/<msisdn>/prompts``               that number's waiting prompts (JSON)
``POST /sandbox/phone/<msisdn>/prompts/<cid>/approve``  answer with success; field ``pin`` (4 digits), JSON or form
``POST /sandbox/phone/<msisdn>/prompts/<cid>/decline``  answer with INS-5 (cancelled by customer)
=====================================================  ===========================================================
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from mpesa.sandbox.phone import render_index_page, render_phone_page
from mpesa.sandbox.settings import SandboxConfigError
from mpesa.sandbox.state import SandboxState
from mpesa.sandbox.store import PendingPayment
from mpesa.validation import mask_msisdn

_PIN = re.compile(r"[0-9]{4}")


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json"
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json"
        )
    return data


class Control:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/sandbox", self.index)
        r.add_get("/sandbox/", self.index)
        r.add_post("/sandbox/reset", self.reset)
        r.add_get("/sandbox/config", self.get_config)
        r.add_put("/sandbox/config", self.put_config)
        r.add_post("/sandbox/config", self.put_config)
        r.add_get("/sandbox/faults", self.get_faults)
        r.add_put("/sandbox/faults", self.put_faults)
        r.add_post("/sandbox/faults", self.put_faults)
        r.add_get("/sandbox/transactions", self.transactions)
        r.add_get("/sandbox/callbacks", self.callbacks)
        r.add_get("/sandbox/phone", self.phone_index)
        r.add_get("/sandbox/phone/", self.phone_index)
        r.add_get("/sandbox/phone/{msisdn}", self.phone_page)
        r.add_get("/sandbox/phone/{msisdn}/prompts", self.prompts)
        r.add_post("/sandbox/phone/{msisdn}/prompts/{cid}/approve", self.approve)
        r.add_post("/sandbox/phone/{msisdn}/prompts/{cid}/decline", self.decline)

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.info)

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"ok": True, "config": self.state.config.to_json()})

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.config.to_json())

    async def put_config(self, request: web.Request) -> web.Response:
        try:
            self.state.config = self.state.config.updated(await _json_object(request))
        except (SandboxConfigError, TypeError) as exc:
            return _error(str(exc))
        return web.json_response(self.state.config.to_json())

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.sender.faults.to_json())

    async def put_faults(self, request: web.Request) -> web.Response:
        try:
            self.state.sender.faults.update(await _json_object(request))
        except SandboxConfigError as exc:
            return _error(str(exc))
        return web.json_response(self.state.sender.faults.to_json())

    async def transactions(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        msisdn = request.query.get("msisdn")
        items = [
            tx.to_json()
            for tx in self.state.store.transactions()
            if (status is None or tx.status.value == status) and (msisdn is None or tx.msisdn == msisdn)
        ]
        return web.json_response(
            {"count": len(items), "pending": self.state.store.pending_count, "transactions": items}
        )

    async def callbacks(self, request: web.Request) -> web.Response:
        deliveries = [d.to_json() for d in self.state.sender.log]
        return web.json_response({"count": len(deliveries), "deliveries": deliveries})

    # phone ------------------------------------------------------------------------------------------------
    def _prompt_json(self, pending: PendingPayment) -> dict[str, Any]:
        tx = pending.transaction
        left = max(0.0, pending.expires_at - asyncio.get_running_loop().time())
        return {
            "conversation_id": tx.conversation_id,
            "merchant": f"{self.state.settings.merchant_name} ({tx.service_provider_code})",
            "amount": str(tx.amount),
            "reference": tx.transaction_reference,
            "third_party_reference": tx.third_party_reference,
            "created_at": tx.created_at.isoformat(),
            "expires_in": round(left, 1),
        }

    def _prompt_list(self, msisdn: str) -> list[dict[str, Any]]:
        return [self._prompt_json(p) for p in self.state.store.prompts_for(msisdn)]

    async def phone_index(self, request: web.Request) -> web.Response:
        return web.Response(text=render_index_page(), content_type="text/html")

    async def phone_page(self, request: web.Request) -> web.Response:
        msisdn = request.match_info["msisdn"]
        page = render_phone_page(msisdn, self._prompt_list(msisdn), masked=mask_msisdn(msisdn))
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def prompts(self, request: web.Request) -> web.Response:
        msisdn = request.match_info["msisdn"]
        return web.json_response(
            {"msisdn": msisdn, "prompts": self._prompt_list(msisdn)}, headers={"Cache-Control": "no-store"}
        )

    async def approve(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, approve=True)

    async def decline(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, approve=False)

    async def _answer(self, request: web.Request, *, approve: bool) -> web.StreamResponse:
        msisdn, cid = request.match_info["msisdn"], request.match_info["cid"]
        is_form = request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
        if is_form:
            form = await request.post()
            pin_value: Any = form.get("pin", "")
        else:
            pin_value = (await _json_object(request)).get("pin", "")
        pending = self.state.store.pending(cid)
        if pending is None or not pending.interactive or pending.transaction.msisdn != msisdn:
            return _error("no such prompt waiting on this phone (answered, expired or never sent)", 404)
        if approve and not (isinstance(pin_value, str) and _PIN.fullmatch(pin_value)):
            return _error("enter a 4-digit PIN to approve")
        code = "INS-0" if approve else "INS-5"
        self.state.store.settle(cid, code)
        if is_form and "application/json" not in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(f"/sandbox/phone/{msisdn}")
        return web.json_response(
            {"conversation_id": cid, "result_code": code, "status": pending.transaction.status.value}
        )
