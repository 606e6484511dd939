"""The access service: reads on the bus become local decisions, door pulses, feedback and events."""

from __future__ import annotations

import asyncio

import pytest

from gateway.access.service import AccessService
from gateway.access.store import AccessStore
from gateway.access.wiegand import encode_h10301
from gateway.bus import EventBus
from gateway.commands import CommandError
from gateway.config import DoorConfig
from gateway.events import Event
from support import ALL_WEEK, FakeReaderDriver

RESIDENT_CARD = "h10301:12:3456"


def snapshot(version: int = 1) -> dict:
    return {"version": version, "mode": "snapshot",
            "persons": [{"person_id": "res-0042", "groups": ["residents"]}],
            "credentials": [{"kind": "card", "value": RESIDENT_CARD, "person_id": "res-0042"},
                            {"kind": "pin", "value": "2468", "person_id": "res-0042"}],
            "rules": [{"rule_id": "residents-gate", "door_id": "north-gate", "group": "residents",
                       "windows": ALL_WEEK, "methods": ["card", "pin"]}]}


def card_read(bits: int, data: bytes, reader: int = 0) -> Event:
    return Event("access.card_read", "osdp-bus-1", {"reader": reader, "format": "wiegand", "bits": bits,
                                                    "data": data.hex()}, internal=True)


def run_scenario(tmp_path, reads: list[Event], sync: dict | None = None):
    reader = FakeReaderDriver()
    seen: list[Event] = []

    async def scenario():
        bus = EventBus()
        bus.subscribe("seen", seen.append, ["access.granted", "access.denied", "door.opened"])
        store = AccessStore(tmp_path / "access.db")
        service = AccessService(bus, store, store.load_policy(), [DoorConfig(id="north-gate", device="osdp-bus-1", reader=0, open_for=4)],
                                "Asia/Shanghai", {"osdp-bus-1": reader})
        bus.subscribe("access", service.on_read, ["access.card_read", "access.keypad"])
        await bus.start()
        result = await service.sync_command(sync or snapshot())
        for event in reads:
            bus.publish(event)
        await bus.stop()
        store.close()
        return result

    result = asyncio.run(scenario())
    return reader, seen, result


def test_a_known_card_opens_the_door_with_green_feedback_and_events(tmp_path):
    bits, data = encode_h10301(12, 3456)
    reader, seen, result = run_scenario(tmp_path, [card_read(bits, data)])
    assert result["applied"] is True and result["version"] == 1
    assert reader.opened == [(0, 4.0)] and reader.feedback_given == [(0, True)]
    granted = [e for e in seen if e.type == "access.granted"]
    assert len(granted) == 1 and not granted[0].internal
    assert granted[0].data == {"door": "north-gate", "method": "card", "person_id": "res-0042", "reason": "granted"}
    assert RESIDENT_CARD not in str(granted[0].data)  # credential values never go up
    opened = [e for e in seen if e.type == "door.opened"]
    assert len(opened) == 1 and opened[0].internal and opened[0].data["person_id"] == "res-0042"


def test_unknown_card_bad_read_and_pin(tmp_path):
    unknown_bits, unknown = encode_h10301(12, 9999)
    bad = bytearray(encode_h10301(12, 3456)[1])
    bad[1] ^= 0x10  # one flipped bit: parity fails
    reads = [card_read(unknown_bits, unknown), card_read(26, bytes(bad)),
             Event("access.keypad", "osdp-bus-1", {"reader": 0, "digits": "2468"}, internal=True),
             card_read(unknown_bits, unknown, reader=5)]  # a reader that serves no door
    reader, seen, _ = run_scenario(tmp_path, reads)
    decisions = [(e.type, e.data["method"], e.data["reason"]) for e in seen if e.type.startswith("access.")]
    assert decisions[0] == ("access.denied", "card", "unknown_credential")
    assert decisions[1][0] == "access.denied" and decisions[1][2].startswith("bad_read")
    assert decisions[2] == ("access.granted", "pin", "granted")
    assert len(decisions) == 3  # the read on the unconfigured reader is ignored
    assert reader.feedback_given == [(0, False), (0, False), (0, True)]
    assert reader.opened == [(0, 4.0)]


def test_a_malformed_or_out_of_order_sync_is_refused(tmp_path):
    with pytest.raises(CommandError):
        run_scenario(tmp_path / "a", [], sync={"version": "x", "mode": "snapshot"})
    with pytest.raises(CommandError, match="expected version"):
        run_scenario(tmp_path / "b", [], sync={"version": 5, "mode": "delta", "persons": []})


def test_decisions_survive_a_restart_without_any_uplink(tmp_path):
    """The rules received once are kept: a new service on the same store decides the same."""
    bits, data = encode_h10301(12, 3456)
    run_scenario(tmp_path, [])
    reader = FakeReaderDriver()
    seen: list[Event] = []

    async def restarted():
        bus = EventBus()
        bus.subscribe("seen", seen.append, ["access.granted", "access.denied"])
        store = AccessStore(tmp_path / "access.db")
        service = AccessService(bus, store, store.load_policy(), [DoorConfig(id="north-gate", device="osdp-bus-1")], "Asia/Shanghai",
                                {"osdp-bus-1": reader})
        bus.subscribe("access", service.on_read, ["access.card_read"])
        await bus.start()
        bus.publish(card_read(bits, data))
        await bus.stop()
        store.close()

    asyncio.run(restarted())
    assert [e.type for e in seen] == ["access.granted"] and reader.opened == [(0, None)]  # the device's pulse


def test_a_grant_whose_door_cannot_open_is_reported_as_such(tmp_path):
    """No running driver for the door's device: no passage is claimed, the reason says why."""
    bits, data = encode_h10301(12, 3456)
    seen: list[Event] = []

    async def scenario():
        bus = EventBus()
        bus.subscribe("seen", seen.append, ["access.granted", "access.denied", "door.opened"])
        store = AccessStore(tmp_path / "access.db")
        service = AccessService(bus, store, store.load_policy(), [DoorConfig(id="north-gate", device="osdp-bus-1")],
                                "Asia/Shanghai", {})
        bus.subscribe("access", service.on_read, ["access.card_read"])
        await bus.start()
        await service.sync_command(snapshot())
        bus.publish(card_read(bits, data))
        await bus.stop()
        store.close()

    asyncio.run(scenario())
    assert [(e.type, e.data["reason"], e.data["person_id"]) for e in seen] == [
        ("access.denied", "door_unavailable", "res-0042")]
