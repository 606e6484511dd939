"""The gateway's HTTP API (FastAPI): health for engineers and monitors, ingest for local systems.

`POST /v1/ingest` answers 202 only after every event in the body is committed to the outbox; a
repeated `event_id` is accepted again without a second event; a malformed body gets 422 and nothing
is stored; a missing or wrong bearer token gets 401 before the body is even read.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import __version__
from .events import DEVICE_ID_PATTERN, EVENT_TYPE_PATTERN, Event, check_event_type, new_event_id, normalise_timestamp, utc_timestamp

if TYPE_CHECKING:
    from .app import Gateway

MAX_EVENTS_PER_REQUEST = 1000
# Starlette renamed the constant; the code is 422 either way.
HTTP_422 = getattr(status, "HTTP_422_UNPROCESSABLE_CONTENT", 422)
HTTP_413 = getattr(status, "HTTP_413_CONTENT_TOO_LARGE", 413)


class IngestEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(..., max_length=64, pattern=EVENT_TYPE_PATTERN.pattern,
                      description="dotted lower-case type, e.g. parking.entry; its first segment is the uplink stream")
    device_id: str = Field(..., pattern=DEVICE_ID_PATTERN.pattern)
    data: dict[str, Any] = Field(..., description="type-specific object")
    event_id: str | None = Field(None, description="a UUID chosen by the sender; repeats are accepted once")
    ts: str | None = Field(None, description="ISO-8601 with a zone; defaults to the time of arrival")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return check_event_type(value)

    @field_validator("event_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("event_id must be a UUID") from None

    @field_validator("data")
    @classmethod
    def _finite_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The JSON parser accepts NaN, Infinity and 1e400 (-> inf), which JSON itself lacks, and
        # integers of any size, which the envelope encoder (64-bit) cannot carry: refuse both here.
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("data must not contain NaN or infinite numbers") from None
        try:
            orjson.dumps(value)
        except TypeError as exc:
            raise ValueError(f"data cannot be carried upstream: {exc}") from None
        return value

    @field_validator("ts")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalise_timestamp(value)
        except OverflowError:  # 0001-01-01T00:00:00+08:00 is before year 1 in UTC
            raise ValueError(f"time out of range: {value!r}") from None


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[IngestEvent] = Field(..., min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class IngestResult(BaseModel):
    event_id: str
    seq: int
    duplicate: bool


class IngestResponse(BaseModel):
    accepted: int = Field(..., description="events newly stored")
    duplicates: int = Field(..., description="events whose event_id had been accepted before")
    events: list[IngestResult]


def create_app(gateway: "Gateway") -> FastAPI:
    app = FastAPI(
        title="Site gateway API",
        version=__version__,
        description="Health for site engineers and monitors; event ingest for local systems.",
    )
    bearer = HTTPBearer(auto_error=False)

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        expected = gateway.config.api.token.get_secret_value()
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/v1/health", summary="Gateway health: status, uptime, backlog, devices")
    async def health() -> dict[str, Any]:
        return gateway.health_report()

    ingest_schema = IngestRequest.model_json_schema(ref_template="#/components/schemas/{model}")

    @app.post(
        "/v1/ingest",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=IngestResponse,
        dependencies=[Depends(require_token)],
        summary="Hand events to the gateway; 202 once all are durably stored",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/IngestRequest"}}}}},
        responses={401: {"description": "missing or wrong token"}, 413: {"description": "body too large"},
                   422: {"description": "malformed body; nothing was stored"},
                   503: {"description": "the store could not commit; nothing was stored, retry"}},
    )
    async def ingest(request: Request) -> IngestResponse:
        body = await _read_limited(request, gateway.config.api.max_body_bytes)
        try:
            parsed = IngestRequest.model_validate_json(body)
        except ValidationError as exc:
            raise HTTPException(HTTP_422, _errors(exc)) from None
        events = [
            Event(e.type, e.device_id, e.data, event_id=e.event_id or new_event_id(), ts=e.ts or utc_timestamp())
            for e in parsed.events
        ]
        try:
            accepted = await asyncio.wrap_future(gateway.outbox.submit(events, dedupe=True))
        except ValueError as exc:  # refused by the encoder: the caller's data, not our disk
            raise HTTPException(HTTP_422, str(exc)) from None
        except Exception as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"not stored, retry: {exc}") from None
        for device_id in {e.device_id for e in events}:
            gateway.health.touch(device_id)
        duplicates = sum(a.duplicate for a in accepted)
        return IngestResponse(
            accepted=len(accepted) - duplicates, duplicates=duplicates,
            events=[IngestResult(event_id=a.event_id, seq=a.seq, duplicate=a.duplicate) for a in accepted],
        )

    @app.get("/v1/cameras", dependencies=[Depends(require_token)],
             summary="Cameras: state, fps, frames processed and skipped, stage times, live counts")
    async def cameras() -> list[dict[str, Any]]:
        return gateway.visits.cameras()

    @app.get("/v1/cameras/{camera_id}/snapshot.jpg", dependencies=[Depends(require_token)],
             summary="The newest frame with boxes, track ids, counting lines and zones drawn, for set-up",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}},
                                                 404: {"description": "no such camera"},
                                                 503: {"description": "no frame from the camera yet"}})
    async def snapshot(camera_id: str) -> Response:
        try:
            jpeg = await asyncio.to_thread(gateway.visits.snapshot, camera_id)
        except KeyError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {camera_id!r}") from None
        if jpeg is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no frame from this camera yet")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    # Issue 6: the screens' players (playlist, proof of play, SSE interrupts), in gateway/ads/api.py.
    from .ads.api import screen_router
    app.include_router(screen_router(gateway))
    from .ads.api import player_router  # the reference web player: /player/{screen_id}
    app.include_router(player_router(gateway))

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(ingest_schema.pop("$defs", {}))
            components["IngestRequest"] = ingest_schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(HTTP_413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(HTTP_413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors without the echoed input (which may be large or sensitive)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)]
