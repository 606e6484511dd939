"""Tills (or a store's POS server) that post each receipt as JSON: an HTTP webhook.

`POST <path>` (default `/pos/receipts`) on `listen_port` (default 8093), body:

    {"receipt_no": "000123", "time": "2026-11-22T10:00:00+08:00", "paid": "12.30", "total": "15.00",
     "refund": false, "reprint": false, "currency": "CNY", "member_code": "M-1",
     "original_receipt_no": null, "lines": [...]}

Only `receipt_no` and one of `paid` / `total` are required; amounts are JSON numbers or decimal
strings, finite and not negative (numbers are read as decimals, never through binary floats). Keys
the gateway does not know are ignored; `lines` is checked to be a list of objects and not kept.

Checks, in order: the source address must be in `allow` when `allow` is set (403); the body at most
`max_body` (413); header `X-Signature: sha256=<hex>` must be the HMAC-SHA256 of the raw body with
`secret` (401, compared in constant time); the body must be valid (422 with the reason). Then one
internal `pos.receipt` event is emitted and the answer is 202:

    {"till": <device id>, "store", "template": None, "source": "webhook", "sha256": <of the body>,
     "fields": {"receipt_no", "time", "paid", "total", "amount", "refund", "reprint", "currency",
                "original_receipt_no"},
     "member_code": <str or None>}

Amounts are decimal strings (`amount` is `paid` if given, else `total`); `time` is the ISO time as
sent, normalised by `datetime.isoformat` (None if absent). The listener is `drivers.http_listener`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .base import DeviceConfig, Driver
from .http_listener import (
    AllowList,
    HttpError,
    HttpListener,
    check_allow_entries,
    check_source,
    read_body,
    source_of,
)
from .receipt_capture import PosDeviceSettings, receipt_base
from .registry import register

DEFAULT_MAX_BODY = 256 * 1024  # a receipt with a few hundred lines fits easily
MAX_LINES = 1000
SIGNATURE_HEADER = "x-signature"
SIGNATURE_PREFIX = "sha256="


class PosWebhookSettings(PosDeviceSettings):
    kind: Literal["pos_webhook"]
    listen_host: str = Field("0.0.0.0", min_length=1, description="address the webhook listener binds to")
    listen_port: int = Field(8093, ge=0, le=65535, description="TCP port the tills post to (0: any free port)")
    path: str = Field("/pos/receipts", pattern=r"^/[A-Za-z0-9._~/-]*$", description="the URL path the tills post to")
    secret: SecretStr = Field(..., min_length=16, description="HMAC-SHA256 key of the X-Signature header")
    allow: list[str] = Field(default_factory=list,
                             description="source addresses or CIDRs that may post (empty: any; the signature "
                                         "authenticates)")
    max_body: ByteSize = Field(DEFAULT_MAX_BODY, gt=0, description="largest request body accepted (413 beyond)")

    @field_validator("allow")
    @classmethod
    def _allow_entries_parse(cls, entries: list[str]) -> list[str]:
        check_allow_entries(entries)
        return entries

    @model_validator(mode="after")
    def _path_not_root(self) -> PosWebhookSettings:
        if self.path == "/":
            raise ValueError("path must not be /")
        return self


# ------------------------------------------------------------------------------------ the body

Amount = Field(None, ge=0, allow_inf_nan=False, max_digits=18, decimal_places=4)


class WebhookReceipt(BaseModel):
    """A receipt as a till posts it."""

    model_config = ConfigDict(extra="ignore")

    receipt_no: str = Field(..., min_length=1, max_length=64)
    time: datetime | None = None
    paid: Decimal | None = Amount
    total: Decimal | None = Amount
    refund: StrictBool = False
    reprint: StrictBool = False
    currency: str = Field("CNY", pattern=r"^[A-Z]{3}$")
    member_code: str | None = Field(None, min_length=1, max_length=128)
    original_receipt_no: str | None = Field(None, min_length=1, max_length=64)
    lines: list[dict[str, Any]] | None = Field(None, max_length=MAX_LINES)

    @field_validator("receipt_no", "member_code", "original_receipt_no", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value() and value >= 0:
            value = str(int(value))  # a receipt number sent as a JSON integer
        if isinstance(value, str):
            value = value.strip()
            if not value.isprintable():
                raise ValueError("must be printable text")
        return value

    @field_validator("time", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be an ISO 8601 time as a string")
        return value

    @field_validator("paid", "total", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, Decimal))):
            raise ValueError("must be a decimal number or a string of one")
        return value

    @model_validator(mode="after")
    def _an_amount(self) -> WebhookReceipt:
        if self.paid is None and self.total is None:
            raise ValueError("paid or total is required")
        return self

    def fields(self) -> dict[str, Any]:
        amount = self.paid if self.paid is not None else self.total
        return {"receipt_no": self.receipt_no, "time": self.time.isoformat() if self.time else None,
                "paid": _decimal_text(self.paid), "total": _decimal_text(self.total),
                "amount": _decimal_text(amount), "refund": self.refund, "reprint": self.reprint,
                "currency": self.currency, "original_receipt_no": self.original_receipt_no}


def _decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_webhook_body(body: bytes) -> WebhookReceipt:
    """The receipt in a webhook body; ValueError with a short reason when it is malformed."""
    try:
        data = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_int=Decimal,
                          parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")  # noqa: TRY004 (ValueError: answered 422)
    try:
        return WebhookReceipt.model_validate(data)
    except ValidationError as exc:
        reasons = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error["loc"]) or "body"
            reasons.append(f"{where}: {error['msg']}")
        raise ValueError("; ".join(reasons)) from None


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """`header` is `sha256=<hex HMAC-SHA256 of body>` under `secret` (constant-time comparison)."""
    if not header:
        return False
    header = header.strip()
    if not header.lower().startswith(SIGNATURE_PREFIX):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header[len(SIGNATURE_PREFIX):].strip().lower().encode())


def sign(secret: bytes, body: bytes) -> str:
    """The X-Signature value for `body` (for tills in tests and the simulator)."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------------ driver


@register
class PosWebhookDriver(Driver):
    kind = "pos_webhook"
    Settings = PosWebhookSettings

    def __init__(self, settings: DeviceConfig, ctx: Any):
        super().__init__(settings, ctx)
        self.port: int | None = None  # the bound listener port, once running
        self._allow = AllowList(settings.allow) if settings.allow else None  # type: ignore[attr-defined]
        self._secret = settings.secret.get_secret_value().encode()  # type: ignore[attr-defined]

    async def run(self) -> None:
        settings: PosWebhookSettings = self.settings  # type: ignore[assignment]
        app = Starlette(routes=[Route(settings.path, self._on_post, methods=["POST"])])
        async with HttpListener(app, settings.listen_host, settings.listen_port, self.ctx.log,
                                name=f"{self.ctx.device_id}-listener") as listener:
            self.port = listener.port
            self.ctx.set_online()
            try:
                while True:
                    listener.check()
                    await asyncio.sleep(1.0)
            finally:
                self.port = None

    async def _on_post(self, request: Request) -> Response:
        settings: PosWebhookSettings = self.settings  # type: ignore[assignment]
        try:
            if self._allow is not None:
                check_source(request, self._allow, self.ctx.log)
            body = await read_body(request, int(settings.max_body))
        except HttpError as exc:
            if exc.status != 403:
                self.ctx.log.warning("receipt from %s refused: %s", source_of(request), exc.reason)
            return exc.response()
        if not signature_ok(self._secret, body, request.headers.get(SIGNATURE_HEADER)):
            self.ctx.log.warning("receipt from %s refused: bad or missing signature", source_of(request))
            return PlainTextResponse("bad or missing signature\n", status_code=401)
        try:
            receipt = parse_webhook_body(body)
        except ValueError as exc:
            self.ctx.log.warning("receipt from %s refused: %s", source_of(request), exc)
            return PlainTextResponse(f"{exc}\n", status_code=422)
        sha256 = hashlib.sha256(body).hexdigest()
        self.ctx.emit("pos.receipt", {**receipt_base(self.ctx, settings, "webhook", None), "sha256": sha256,
                                      "fields": receipt.fields(), "member_code": receipt.member_code},
                      internal=True)
        return JSONResponse({"accepted": True, "sha256": sha256}, status_code=202)
