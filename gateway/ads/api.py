"""The screen API: what a screen's player talks to (mounted by `gateway.api.create_app`).

    GET  /v1/screens/{id}/playlist   the playlist; ETag, If-None-Match -> 304; Cache-Control: no-cache
    POST /v1/screens/{id}/plays      proof of play {"plays": [...]} (at most 1000) -> 202 {accepted, duplicates, expired}
    GET  /v1/screens/{id}/events     Server-Sent Events: `interrupt` and `playlist`; `: keep-alive` every 15 s
    GET  /v1/screens/{id}/media/{sha256}   a creative's file from the gateway's media cache (the playlist's
                                     `local_url`); ETag the sha256, immutable; 404 while not cached

Auth, in this order: an unknown screen id is 404 (screen ids are not secrets); no bearer token (or a
blank one) is 401; the screen's own token (`screens[].token`) may do everything; the site API
token (`api.token`) may read any screen's playlist and events (site engineers checking a screen)
but not post plays (403); another screen's token is 403; any other token is 401.

A player that cannot keep an SSE stream open polls the playlist (every 30-60 s, with If-None-Match:
a 304 costs nothing) and plays it by the items' `start`/`end`; it then misses only the interrupts.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..events import normalise_timestamp
from .media import SHA256
from .plays import PlayRecord, iso_to_ms, to_ms
from .service import MAX_CLOCK_SKEW_MS

if TYPE_CHECKING:
    from ..app import Gateway

MAX_PLAYS_PER_REQUEST = 1000
MAX_PLAY_SECONDS = 86400
KEEPALIVE_SECONDS = 15.0
HTTP_422 = getattr(status, "HTTP_422_UNPROCESSABLE_CONTENT", 422)


class PlayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    play_id: str = Field(..., description="a UUID the player makes; a repeat is counted once")
    creative_id: str = Field(..., min_length=1, max_length=128)
    campaign_id: str | None = Field(None, min_length=1, max_length=128, description="none: the default loop")
    start: str = Field(..., description="ISO-8601 with a zone")
    end: str = Field(..., description="ISO-8601 with a zone, not before start")
    impressions: int | None = Field(None, ge=0, le=1_000_000)
    attention_s: float | None = Field(None, ge=0, le=1e7, allow_inf_nan=False)

    @field_validator("play_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("play_id must be a UUID") from None

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str) -> str:
        try:
            return normalise_timestamp(value)
        except OverflowError:
            raise ValueError(f"time out of range: {value!r}") from None

    @model_validator(mode="after")
    def _ordered(self):
        seconds = (iso_to_ms(self.end) - iso_to_ms(self.start)) / 1000
        if seconds < 0:
            raise ValueError("end is before start")
        if seconds > MAX_PLAY_SECONDS:
            raise ValueError(f"a play cannot last more than {MAX_PLAY_SECONDS} s")
        return self

    def record(self) -> PlayRecord:
        return PlayRecord(self.play_id, self.creative_id, self.campaign_id, iso_to_ms(self.start), iso_to_ms(self.end),
                          self.impressions, self.attention_s)


class PlaysRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plays: list[PlayIn] = Field(..., min_length=1, max_length=MAX_PLAYS_PER_REQUEST)


class PlaysResponse(BaseModel):
    accepted: int = Field(..., description="records newly stored")
    duplicates: int = Field(..., description="records whose play_id was stored before")
    expired: int = Field(0, description="records older than ads.keep_plays, not kept")


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def screen_router(gateway: "Gateway") -> APIRouter:
    from ..api import _errors, _read_limited  # here: gateway.api imports this module

    router = APIRouter(prefix="/v1/screens", tags=["screens"])
    bearer = HTTPBearer(auto_error=False)
    unauthorised = {"WWW-Authenticate": "Bearer"}

    def service():
        if gateway.ads is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the ads service is not running")
        return gateway.ads

    def authorise(screen_id: str, credentials: HTTPAuthorizationCredentials | None, write: bool) -> None:
        ads = service()
        screen = ads.screen(screen_id)
        if screen is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no screen {screen_id!r}")
        given = credentials.credentials.strip().encode() if credentials is not None else b""
        if not given:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=unauthorised)
        if screen.token is not None and secrets.compare_digest(given, screen.token.get_secret_value().encode()):
            return
        site = gateway.config.api.token.get_secret_value().encode()
        if secrets.compare_digest(given, site):
            if write:
                raise HTTPException(status.HTTP_403_FORBIDDEN, "the site API token cannot post plays")
            return
        for other in ads.screens():
            if other.token is not None and secrets.compare_digest(given, other.token.get_secret_value().encode()):
                raise HTTPException(status.HTTP_403_FORBIDDEN, "this token belongs to another screen")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong bearer token", headers=unauthorised)

    # async: a few comparisons, done on the loop; a plain `def` dependency would cost every request a
    # hop to FastAPI's thread pool (a third of the throughput of a 304).
    async def reader(screen_id: str, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        authorise(screen_id, credentials, write=False)
        return screen_id

    async def writer(screen_id: str, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        authorise(screen_id, credentials, write=True)
        return screen_id

    errors = {401: {"description": "missing or wrong token"}, 403: {"description": "another screen's token"},
              404: {"description": "no such screen"}}

    @router.get("/{screen_id}/playlist", summary="The screen's playlist (ETag; If-None-Match gives 304)",
                responses={**errors, 304: {"description": "unchanged"}})
    async def playlist(request: Request, screen_id: str = Depends(reader)) -> Response:
        found = service().playlist(screen_id)
        if found is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no playlist yet, retry")
        doc, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(orjson.dumps(doc), media_type="application/json", headers=headers)

    # Issue 6 (media): the screens' media, served from the gateway's cache.
    @router.get("/{screen_id}/media/{sha256}", summary="A creative's file from the media cache (the playlist's "
                "local_url); 404 while not cached: use media_url", response_class=FileResponse,
                responses={**errors, 304: {"description": "unchanged"}, 404: {"description": "no such screen, "
                           "or the file is not cached (yet)"}})
    async def media(request: Request, sha256: str, screen_id: str = Depends(reader)) -> Response:
        found = service().media_file(sha256) if SHA256.match(sha256) else None
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not cached (yet): use the item's media_url")
        path, media_type = found
        headers = {"ETag": f'"{sha256}"', "Cache-Control": "public, max-age=31536000, immutable"}
        if _matches(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return FileResponse(path, media_type=media_type, headers=headers)

    @router.post("/{screen_id}/plays", status_code=status.HTTP_202_ACCEPTED, response_model=PlaysResponse,
                 summary="Proof of play; 202 once stored; idempotent by play_id",
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                     "schema": PlaysRequest.model_json_schema()}}}},
                 responses={**errors, 413: {"description": "body too large"},
                            422: {"description": "malformed; nothing was stored"}})
    async def plays(request: Request, screen_id: str = Depends(writer)) -> PlaysResponse:
        body = await _read_limited(request, gateway.config.api.max_body_bytes)
        try:
            parsed = PlaysRequest.model_validate_json(body)
        except ValidationError as exc:
            raise HTTPException(HTTP_422, _errors(exc)) from None
        ads = service()
        latest = to_ms(ads.clock()) + MAX_CLOCK_SKEW_MS
        future = [{"loc": ["body", "plays", i, "end"], "msg": "in the future (check the player's clock)",
                   "type": "value_error"} for i, p in enumerate(parsed.plays) if iso_to_ms(p.end) > latest]
        if future:
            raise HTTPException(HTTP_422, future)
        try:
            result = await ads.add_plays(screen_id, [p.record() for p in parsed.plays])
        except Exception as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"not stored, retry: {exc}") from None
        return PlaysResponse(**result)

    @router.get("/{screen_id}/events", summary="Server-Sent Events: interrupt, playlist; keep-alive every 15 s",
                response_class=StreamingResponse, responses={**errors, 200: {"content": {"text/event-stream": {}}}})
    async def events(request: Request, screen_id: str = Depends(reader)) -> StreamingResponse:
        ads = service()

        async def stream():
            queue = ads.subscribe(screen_id)  # before the first byte: nothing sent after it is missed
            current = ads.playlist(screen_id)
            try:
                yield b"retry: 3000\n\n"
                if current is not None:
                    doc, etag = current
                    yield _sse("playlist", {"version": doc["version"], "etag": etag,
                                            "valid_until": doc["valid_until"]})
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                    except asyncio.TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if message is None:
                        return
                    yield _sse(*message)
            finally:
                ads.unsubscribe(screen_id, queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return router


# ---------------------------------------------------------------- issue 6: the reference web player
# GET /player/{screen_id}        the player page (index.html); the screen's token goes in the URL's
#                                fragment (#token=...), which browsers never send, so it stays out of
#                                server and proxy logs; player.js sends it as `Authorization: Bearer`.
# GET /player/static/{name}      the player's static files (gateway/ads/player/), a fixed set.
# GET /player/sw.js              its service worker, at /player/ so that its scope covers the pages.
# No auth here: the files hold no secret, and everything the page then asks for needs the token.

PLAYER_DIR = __import__("pathlib").Path(__file__).with_name("player")
PLAYER_FILES = {"index.html": "text/html; charset=utf-8", "player.js": "text/javascript; charset=utf-8",
                "sw.js": "text/javascript; charset=utf-8"}
PLAYER_HEADERS = {
    "Cache-Control": "no-cache",  # revalidated on every load, so a new gateway's player is picked up
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Media and web creatives may come from the platform's CDN; the page itself talks only to the gateway.
    "Content-Security-Policy": "default-src 'self'; img-src * data: blob:; media-src * data: blob:; "
                               "frame-src *; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'",
}


def player_router(gateway: "Gateway") -> APIRouter:
    router = APIRouter(prefix="/player", tags=["player"])

    def file(name: str) -> Response:
        if name not in PLAYER_FILES:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no player file {name!r}")
        return Response((PLAYER_DIR / name).read_bytes(), media_type=PLAYER_FILES[name], headers=PLAYER_HEADERS)

    @router.get("/static/{name}", summary="The web player's static files", response_class=Response)
    async def static(name: str) -> Response:
        return file(name)

    @router.get("/sw.js", summary="The web player's service worker (scope /player/: the page opens offline)",
                response_class=Response)
    async def service_worker() -> Response:
        return file("sw.js")

    @router.get("/{screen_id}", summary="The reference web player of a screen (token in the URL fragment: #token=...)",
                response_class=Response, responses={200: {"content": {"text/html": {}}},
                                                    404: {"description": "no such screen"}})
    async def page(screen_id: str) -> Response:
        if gateway.ads is not None and gateway.ads.screen(screen_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no screen {screen_id!r}")
        return file("index.html")

    return router
# ---------------------------------------------------------------- end of issue 6: the web player
