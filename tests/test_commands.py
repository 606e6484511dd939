"""Remote commands: `parse_command` on arbitrary bytes, and `CommandRouter` dispatching from another
thread (as the uplink does) to handlers on a real asyncio loop, answering every command with an ack."""

from __future__ import annotations

import asyncio
import json
import queue
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.commands import MAX_COMMAND_ID_LENGTH, CommandError, CommandRouter, parse_command

ACK_KEYS = {"command_id", "ok", "error", "result"}


# ------------------------------------------------------------------------------ parse_command


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
command_like = st.fixed_dictionaries(
    {},
    optional={"command_id": json_values | st.text(max_size=200), "args": json_values, "extra": json_values},
)


def _parses_or_value_error(payload: bytes) -> None:
    try:
        command_id, args = parse_command(payload)
    except ValueError as exc:
        assert str(exc)
    else:
        assert isinstance(command_id, str) and 0 < len(command_id) <= MAX_COMMAND_ID_LENGTH
        assert isinstance(args, dict)


@settings(max_examples=500)
@given(st.binary())
def test_parse_command_arbitrary_bytes_only_value_error(payload):
    _parses_or_value_error(payload)


@settings(max_examples=500)
@given(st.one_of(command_like, json_values))
def test_parse_command_arbitrary_json_only_value_error(body):
    _parses_or_value_error(json.dumps(body).encode())


@pytest.mark.parametrize("payload", [
    b"[" * 100_000,                 # nested deeper than Python's recursion limit, yet under 1 MiB
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"x" * (1024 * 1024 + 1),       # over the size limit
    b'{"command_id": "c1"}\xff',
    b"NaN",
])
def test_parse_command_hostile_payloads_raise_value_error(payload):
    with pytest.raises(ValueError):
        parse_command(payload)


def test_parse_command_valid():
    assert parse_command(b'{"command_id": "c1", "args": {"x": 1}}') == ("c1", {"x": 1})
    assert parse_command(b'{"command_id": "c1"}') == ("c1", {})
    assert parse_command(b'{"command_id": "c1", "args": null}') == ("c1", {})


# ----------------------------------------------------------------------------------- router


@pytest.fixture
def loop():
    """An asyncio loop running in its own thread, like the gateway's."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


class Harness:
    """A router plus the acks it sent, collected from whichever thread replied."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.router = CommandRouter(loop)
        self.acks: queue.Queue[dict] = queue.Queue()
        self.calls: list[tuple[str, dict]] = []

    def send(self, name: str, body) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        # From a thread that is not the loop's, as paho's network thread would.
        thread = threading.Thread(target=self.router.dispatch, args=(name, payload, self.acks.put))
        thread.start()
        thread.join(10)

    def ack(self) -> dict:
        ack = self.acks.get(timeout=10)
        assert set(ack) == ACK_KEYS
        return ack

    def no_more_acks(self) -> bool:
        return self.acks.empty()


@pytest.fixture
def harness(loop):
    h = Harness(loop)

    async def ping(args):
        h.calls.append(("ping", args))
        return {"pong": True, "echo": args.get("echo")}

    async def refuse(args):
        h.calls.append(("refuse", args))
        raise CommandError("not now: the barrier is moving")

    async def explode(args):
        h.calls.append(("explode", args))
        return {}["missing"]

    async def slow(args):
        h.calls.append(("slow", args))
        await asyncio.sleep(3600)

    for name, handler in {"ping": ping, "refuse": refuse, "explode": explode, "slow": slow}.items():
        h.router.register(name, handler)
    return h


def test_ping_acks_ok_with_result(harness):
    harness.send("ping", {"command_id": "c-1", "args": {"echo": "hi"}})
    assert harness.ack() == {"command_id": "c-1", "ok": True, "error": None, "result": {"pong": True, "echo": "hi"}}
    assert harness.calls == [("ping", {"echo": "hi"})]


def test_handler_runs_on_the_loop_thread(harness, loop):
    threads = []

    async def where(args):
        threads.append(threading.current_thread().name)
        return None

    harness.router.register("where", where)
    harness.send("where", {"command_id": "w-1"})
    assert harness.ack()["ok"] is True
    assert threads == ["test-loop"]


def test_unknown_command_lists_known_ones(harness):
    harness.send("reboot", {"command_id": "c-2"})
    ack = harness.ack()
    assert (ack["command_id"], ack["ok"], ack["result"]) == ("c-2", False, None)
    assert "unknown command 'reboot'" in ack["error"]
    assert "explode, ping, refuse, slow" in ack["error"]
    assert harness.router.names == ["explode", "ping", "refuse", "slow"]


@pytest.mark.parametrize("payload, command_id", [
    (b"not json", None),
    (b"\xff\xfe", None),
    (b'["command_id", "c-3"]', None),
    (b"{}", None),
    (b'{"command_id": ""}', None),
    (b'{"command_id": 42}', None),
    (json.dumps({"command_id": "x" * (MAX_COMMAND_ID_LENGTH + 1)}).encode(), None),
    (b'{"command_id": "c-4", "args": [1, 2]}', "c-4"),
    (b'{"command_id": "c-5", "args": "yes"}', "c-5"),
    (b"[" * 100_000, None),
])
def test_malformed_payloads_get_an_error_ack(harness, payload, command_id):
    harness.send("ping", payload)
    ack = harness.ack()
    assert ack["command_id"] == command_id
    assert ack["ok"] is False and ack["result"] is None
    assert ack["error"].startswith("malformed command: ")
    assert harness.calls == []


def test_a_valid_command_id_of_maximum_length_is_read(harness):
    command_id = "x" * MAX_COMMAND_ID_LENGTH
    harness.send("ping", {"command_id": command_id})
    assert harness.ack()["command_id"] == command_id


def test_command_error_gives_its_message(harness):
    harness.send("refuse", {"command_id": "c-6"})
    assert harness.ack() == {"command_id": "c-6", "ok": False, "error": "not now: the barrier is moving",
                             "result": None}


def test_other_exception_gives_type_and_message(harness):
    harness.send("explode", {"command_id": "c-7"})
    ack = harness.ack()
    assert (ack["command_id"], ack["ok"]) == ("c-7", False)
    assert ack["error"] == "KeyError: 'missing'"


def test_timeout_gives_an_error_ack(harness):
    harness.router.timeout = 0.05
    harness.send("slow", {"command_id": "c-8"})
    ack = harness.ack()
    assert (ack["command_id"], ack["ok"], ack["result"]) == ("c-8", False, None)
    assert ack["error"] == "slow did not finish within 0.05s"


def test_router_keeps_working_after_failures(harness):
    harness.router.timeout = 0.05
    for name, command_id in [("explode", "a"), ("slow", "b"), ("refuse", "c"), ("nope", "d")]:
        harness.send(name, {"command_id": command_id})
        assert harness.ack()["ok"] is False
    harness.send("ping", {"command_id": "e"})
    assert harness.ack()["ok"] is True


def test_repeated_command_id_answered_with_first_ack_and_run_once(harness):
    harness.send("ping", {"command_id": "c-9", "args": {"echo": 1}})
    first = harness.ack()
    harness.send("ping", {"command_id": "c-9", "args": {"echo": 2}})
    assert harness.ack() == first
    assert harness.calls == [("ping", {"echo": 1})]


def test_repeated_failed_command_is_not_run_again(harness):
    harness.send("explode", {"command_id": "c-10"})
    first = harness.ack()
    harness.send("explode", {"command_id": "c-10"})
    assert harness.ack() == first
    assert len(harness.calls) == 1


def test_repeat_arriving_while_the_first_still_runs(harness, loop):
    """QoS 1 may redeliver while the handler is still busy: it must not run a second time."""
    release = threading.Event()
    runs = []

    async def barrier(args):
        runs.append(args)
        await asyncio.to_thread(release.wait, 10)
        return {"opened": True}

    harness.router.register("open-barrier", barrier)
    harness.send("open-barrier", {"command_id": "c-11", "args": {"n": 1}})
    harness.send("open-barrier", {"command_id": "c-11", "args": {"n": 2}})
    assert harness.no_more_acks()
    release.set()
    first, second = harness.ack(), harness.ack()
    assert first == second == {"command_id": "c-11", "ok": True, "error": None, "result": {"opened": True}}
    assert runs == [{"n": 1}]
    harness.send("open-barrier", {"command_id": "c-11"})
    assert harness.ack() == first
    assert runs == [{"n": 1}]


def test_distinct_command_ids_run_separately(harness):
    for i in range(5):
        harness.send("ping", {"command_id": f"p-{i}", "args": {"echo": i}})
    acks = sorted((harness.ack() for _ in range(5)), key=lambda a: a["command_id"])
    assert [a["result"]["echo"] for a in acks] == list(range(5))
    assert len(harness.calls) == 5
