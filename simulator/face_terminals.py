"""Virtual face terminals that push to the gateway, as Hikvision (ISAPI) and ZKTeco (push/ADMS) ones do.

Both have a thread API, usable from tests (call them through `asyncio.to_thread` inside a running
loop, or straight from a plain test) and from the demo:

    hik = VirtualHikvisionTerminal("http://127.0.0.1:8091/isapi/events", host="127.0.0.2").start()
    hik.port                              # its ISAPI port: put it (and `host`) in the driver's terminal
    hik.push_face("M-1", serial=1)        # a recognised face, JSON body
    hik.push_face("M-1", serial=2, multipart="form-data")   # JSON part + a real JPEG picture part
    hik.push_face(None, serial=3)         # a stranger (subEventType 76)
    hik.remote_opens                      # door numbers the gateway opened (digest auth checked)
    hik.stop()

    zk = VirtualZktecoTerminal("http://127.0.0.1:8092", sn="ABC123").start()  # handshake, then polls
    zk.punch("1001", verify=15)           # an ATTLOG line (15: face)
    zk.rtlog(pin="1001", cardno="123", verifytype=4, index=12)               # an rtlog line (card)
    zk.commands, zk.door_opens            # commands collected by getrequest, door pulses executed
    zk.stop()

`VirtualHikvisionTerminal` pushes from `host` (its source address is `host`, so several terminals
on 127.0.0.x can be told apart by the gateway's allow-list) and serves
`PUT /ISAPI/AccessControl/RemoteControl/door/{n}` on `host:port` with HTTP digest auth (MD5,
qop=auth), in a uvicorn server on its own event loop in a background thread. Pictures come from
`../shared/data/faces` (a generated JPEG where that is absent).
`VirtualZktecoTerminal` does the `options=all` handshake, posts ATTLOG and rtlog lines, polls
`getrequest` every `poll_interval` in a background thread, records each `CONTROL DEVICE` it gets
and posts its result to `devicecmd` (Return=0).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from drivers.http_listener import HttpListener

log = logging.getLogger(__name__)

FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
_DIGEST_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def face_jpeg() -> bytes:
    """A real face photo from ../shared/data/faces, else a small generated JPEG."""
    if FACES_DIR.is_dir():
        for path in sorted(FACES_DIR.rglob("*.jpg")):
            data = path.read_bytes()
            if data[:2] == b"\xff\xd8" and len(data) < 1_500_000:
                return data
    import cv2
    import numpy as np

    image = np.random.default_rng(7).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class _LoopThread:
    """An asyncio loop in a daemon thread, for a virtual device's server."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class VirtualHikvisionTerminal:
    """A Hikvision face terminal: pushes AccessControllerEvents, obeys remote opens (digest auth)."""

    def __init__(self, push_url: str, *, host: str = "127.0.0.1", port: int = 0, username: str = "admin",
                 password: str = "terminal-pass-1", mac: str = "a4:14:37:00:00:01", realm: str = "DS-K1T671",
                 picture: bytes | None = None):
        self.push_url = push_url
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.username = username
        self.password = password
        self.mac = mac
        self.realm = realm
        self.picture = picture if picture is not None else face_jpeg()
        self.remote_opens: list[int] = []  # door numbers opened with good credentials
        self.auth_failures = 0
        self._nonces: set[str] = set()
        self._loop: _LoopThread | None = None
        self._listener: HttpListener | None = None
        self._client = httpx.Client(transport=httpx.HTTPTransport(local_address=host), timeout=5.0)

    # --- lifecycle ---

    def start(self) -> VirtualHikvisionTerminal:
        app = Starlette(routes=[Route("/ISAPI/AccessControl/RemoteControl/door/{door:int}", self._remote_control,
                                      methods=["PUT"])])
        self._loop = _LoopThread(f"sim-hikvision-{self.host}")
        self._listener = HttpListener(app, self.host, self.requested_port, log, name="virtual-hikvision")
        self._loop.run(self._listener.__aenter__())
        self.port = self._listener.port
        return self

    def stop(self) -> None:
        if self._loop is not None:
            if self._listener is not None:
                self._loop.run(self._listener.__aexit__(None, None, None))
            self._loop.close()
            self._loop = None
        self._client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- pushing events ---

    def event(self, sub_event: int, *, serial: int, employee_no: str | None = None, card_no: str | None = None,
              door_no: int = 1, when: str | None = None) -> dict:
        """An AccessControllerEvent notification as the terminal posts it."""
        ace: dict[str, Any] = {"deviceName": "virtual", "majorEventType": 5, "subEventType": sub_event,
                               "serialNo": serial, "doorNo": door_no, "currentVerifyMode": "cardOrFace",
                               "attendanceStatus": "undefined", "picturesNumber": 1, "mask": "no"}
        if employee_no is not None:
            ace["employeeNoString"] = employee_no
            ace["name"] = f"person {employee_no}"
        if card_no is not None:
            ace["cardNo"] = card_no
        return {"ipAddress": self.host, "portNo": self.port or 80, "protocol": "HTTP", "macAddress": self.mac,
                "channelID": 1, "dateTime": when or datetime.now().astimezone().isoformat(timespec="seconds"),
                "activePostCount": 1, "eventType": "AccessControllerEvent", "eventState": "active",
                "eventDescription": "Access Controller Event", "AccessControllerEvent": ace}

    def push(self, event: dict, multipart: str | None = None) -> httpx.Response:
        """Post `event`: JSON (multipart None), or "form-data"/"mixed" with the JPEG as a second part."""
        body = json.dumps(event)
        if multipart is None:
            return self._client.post(self.push_url, content=body, headers={"Content-Type": "application/json"})
        if multipart == "form-data":
            return self._client.post(self.push_url, data={"AccessControllerEvent": body},
                                     files={"Picture": ("face.jpg", self.picture, "image/jpeg")})
        boundary = "MIME_boundary_" + uuid.uuid4().hex
        parts = [
            f"--{boundary}\r\nContent-Type: application/json\r\nContent-Disposition: form-data; "
            f'name="event_log"\r\n\r\n'.encode() + body.encode() + b"\r\n",
            f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Disposition: form-data; name=\"Picture\"; "
            f'filename="face.jpg"\r\n\r\n'.encode() + self.picture + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        return self._client.post(self.push_url, content=b"".join(parts),
                                 headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})

    def push_face(self, employee_no: str | None, *, serial: int, multipart: str | None = None) -> httpx.Response:
        """A face verified (75) as `employee_no`, or a stranger (76) for None."""
        sub = 75 if employee_no is not None else 76
        return self.push(self.event(sub, serial=serial, employee_no=employee_no), multipart)

    def push_card(self, card_no: str, *, serial: int, valid: bool = True) -> httpx.Response:
        return self.push(self.event(1 if valid else 9, serial=serial, card_no=card_no))

    def push_heartbeat(self) -> httpx.Response:
        return self._client.post(self.push_url, headers={"Content-Type": "application/json"}, content=json.dumps(
            {"ipAddress": self.host, "macAddress": self.mac, "eventType": "heartBeat",
             "dateTime": datetime.now().astimezone().isoformat(timespec="seconds")}))

    # --- the terminal's ISAPI side ---

    async def _remote_control(self, request: Request) -> Response:
        if not self._authorised(request):
            self.auth_failures += 1
            nonce = secrets.token_hex(16)
            self._nonces.add(nonce)
            return Response(status_code=401, headers={
                "WWW-Authenticate": f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm=MD5'})
        body = (await request.body()).decode("utf-8", "replace")
        if "<cmd>open</cmd>" not in body:
            return PlainTextResponse("bad command", status_code=400)
        self.remote_opens.append(int(request.path_params["door"]))
        return Response('<?xml version="1.0" encoding="UTF-8"?><ResponseStatus><statusCode>1</statusCode>'
                        "<statusString>OK</statusString></ResponseStatus>", media_type="application/xml")

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("digest "):
            return False
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _DIGEST_PARAM.finditer(header[7:])}
        if params.get("username") != self.username or params.get("nonce") not in self._nonces:
            return False
        uri = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if params.get("uri") != uri:
            return False
        ha1 = _md5(f"{self.username}:{self.realm}:{self.password}")
        ha2 = _md5(f"{request.method}:{uri}")
        expected = _md5(f"{ha1}:{params['nonce']}:{params.get('nc', '')}:{params.get('cnonce', '')}:"
                        f"{params.get('qop', '')}:{ha2}")
        return secrets.compare_digest(expected, params.get("response", ""))


class VirtualZktecoTerminal:
    """A ZKTeco terminal on the push protocol: handshake, ATTLOG/rtlog posts, command polling."""

    def __init__(self, base_url: str, *, sn: str = "ABC123", host: str = "127.0.0.1", poll_interval: float = 0.2,
                 result: int = 0):
        self.base_url = base_url.rstrip("/")
        self.sn = sn
        self.host = host
        self.poll_interval = poll_interval
        self.result = result  # the Return code it reports for each command
        self.options: str | None = None  # the handshake answer
        self.commands: list[str] = []  # every command line collected ("C:<id>:<command>")
        self.door_opens: list[tuple[int, int]] = []  # (door, seconds) of each CONTROL DEVICE pulse
        self.poll_failures = 0
        self._client = httpx.Client(transport=httpx.HTTPTransport(local_address=host), timeout=5.0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, poll: bool = True) -> VirtualZktecoTerminal:
        self.options = self.handshake().text
        if poll:
            self._thread = threading.Thread(target=self._poll_loop, name=f"sim-zkteco-{self.sn}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- requests ---

    def handshake(self) -> httpx.Response:
        with self._lock:
            return self._client.get(f"{self.base_url}/iclock/cdata",
                                    params={"SN": self.sn, "options": "all", "pushver": "2.4.1", "language": "69"})

    def post_table(self, table: str, text: str, stamp: int | None = None) -> httpx.Response:
        params = {"SN": self.sn, "table": table, "Stamp": str(stamp if stamp is not None else int(time.time()))}
        with self._lock:
            return self._client.post(f"{self.base_url}/iclock/cdata", params=params, content=text.encode(),
                                     headers={"Content-Type": "text/plain"})

    def punch(self, pin: str, *, verify: int = 15, when: str | None = None, status: int = 0) -> httpx.Response:
        """One ATTLOG line: PIN, time, status, verify type, work code, reserved."""
        when = when or datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        return self.post_table("ATTLOG", f"{pin}\t{when}\t{status}\t{verify}\t0\t0\t0\n")

    def rtlog(self, *, pin: str = "0", cardno: str = "0", verifytype: int = 15, event: int = 0, index: int = 1,
              door: int = 1, when: str | None = None) -> httpx.Response:
        """One rtlog line of access-control firmware."""
        when = when or datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        line = "\t".join([f"time={when}", f"pin={pin}", f"cardno={cardno}", f"eventaddr={door}", f"event={event}",
                          "inoutstatus=0", f"verifytype={verifytype}", f"index={index}", "sitecode=0", "linkid=0"])
        return self.post_table("rtlog", line + "\n")

    def poll_once(self) -> list[str]:
        """One getrequest poll; executes (records) what came and posts the results."""
        with self._lock:
            answer = self._client.get(f"{self.base_url}/iclock/getrequest", params={"SN": self.sn})
        answer.raise_for_status()
        lines = [line.strip() for line in answer.text.splitlines() if line.strip().startswith("C:")]
        results = []
        for line in lines:
            _, cid, command = line.split(":", 2)
            self.commands.append(line)
            match = re.fullmatch(r"CONTROL DEVICE 01([0-9A-F]{2})01([0-9A-F]{2})", command.strip())
            if match:
                self.door_opens.append((int(match.group(1), 16), int(match.group(2), 16)))
            results.append(f"ID={cid}&Return={self.result}&CMD={command.split(' ')[0]} {command.split(' ')[1]}"
                           if " " in command else f"ID={cid}&Return={self.result}&CMD={command}")
        if results:
            with self._lock:
                self._client.post(f"{self.base_url}/iclock/devicecmd", params={"SN": self.sn},
                                  content="\n".join(results).encode())
        return lines

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - a terminal keeps polling whatever the server says
                self.poll_failures += 1
                log.debug("poll failed: %s", exc)
