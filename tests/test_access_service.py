"""The access service: reads on the bus become local decisions, door pulses, feedback and events."""

from __future__ import annotations

import asyncio

import pytest

from gateway.access.service import READ_EVENT_TYPES, AccessService
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


# ------------------------------------------------------------------- identified credentials

FACE_DOORS = [DoorConfig(id="north-gate", device="terminals", reader="t1", methods=["card", "face"]),
              DoorConfig(id="lobby", device="osdp-bus-1", reader=0, camera="gate-cam", methods=["card", "face"])]


def face_snapshot() -> dict:
    body = snapshot()
    body["credentials"].append({"kind": "face", "value": "M-42", "person_id": "res-0042"})
    body["rules"] = [{"rule_id": f"residents-{door}", "door_id": door, "group": "residents", "windows": ALL_WEEK,
                      "methods": ["card", "face"]} for door in ("north-gate", "lobby")]
    return body


def identified(value, method="face", serial=None, reader="t1", device="terminals", door=None) -> Event:
    data = {"reader": reader, "method": method, "value": value}
    if serial is not None:
        data["terminal_serial"] = serial
    if door is not None:
        data["door"] = door
    return Event("access.identified", device, data, internal=True)


def run_identified(store_path, events, doors=FACE_DOORS, sync=None):
    """One service life on the store at `store_path`: sync (if given), the events, a flush."""
    actuators = {"terminals": FakeReaderDriver(), "osdp-bus-1": FakeReaderDriver()}
    seen: list[Event] = []

    async def scenario():
        bus = EventBus()
        bus.subscribe("seen", seen.append, ["access.granted", "access.denied"])
        store = AccessStore(store_path)
        service = AccessService(bus, store, store.load_policy(), doors, "Asia/Shanghai", actuators)
        await asyncio.to_thread(service.load_seen)
        bus.subscribe("access", service.on_read, READ_EVENT_TYPES)
        await bus.start()
        if sync is not None:
            await service.sync_command(sync)
        for event in events:
            bus.publish(event)
        await bus.stop()
        await service.flush_log()
        entries = store.log_entries()
        store.close()
        return service, entries

    service, entries = asyncio.run(scenario())
    return actuators, [(e.type, e.data["door"], e.data["method"], e.data["reason"]) for e in seen], service, entries


def test_a_terminals_face_match_and_a_gate_cameras_match_open_their_doors(tmp_path):
    actuators, decisions, _, entries = run_identified(tmp_path / "a.db", [
        identified("M-42", serial="1001"),  # the terminal recognised the member
        identified("M-42", device="gate-cam", reader=None, door="lobby"),  # the gateway's own face gate
        identified(None, serial="1002"),  # a stranger at the terminal
        identified("cardno:77", method="card", serial="1003"),  # a card the set does not know
        identified("1", method="fingerprint", serial="1004")],  # the door does not take fingerprints
        sync=face_snapshot())
    assert decisions == [("access.granted", "north-gate", "face", "granted"),
                         ("access.granted", "lobby", "face", "granted"),
                         ("access.denied", "north-gate", "face", "unknown_credential"),
                         ("access.denied", "north-gate", "card", "unknown_credential"),
                         ("access.denied", "north-gate", "fingerprint", "method_not_allowed")]
    assert actuators["terminals"].opened == [("t1", None)]
    assert actuators["osdp-bus-1"].opened == [(0, None)]
    assert [(e["door"], e["method"], e["granted"]) for e in reversed(entries)] == [
        (d, m, r == "granted") for _, d, m, r in decisions]


def test_a_door_refuses_methods_it_does_not_take(tmp_path):
    doors = [DoorConfig(id="north-gate", device="terminals", reader="t1")]  # card, pin, qr: no face
    _, decisions, _, _ = run_identified(tmp_path / "a.db", [identified("M-42", serial="1")], doors=doors,
                                        sync=face_snapshot())
    assert decisions == [("access.denied", "north-gate", "face", "method_not_allowed")]


def test_a_terminal_record_is_decided_once_even_across_restarts(tmp_path):
    store = tmp_path / "access.db"
    actuators, decisions, service, _ = run_identified(
        store, [identified("M-42", serial="7"), identified("M-42", serial="7"), identified("M-42", serial="8")],
        sync=face_snapshot())
    assert len(decisions) == 2 and service.duplicates == 1 and len(actuators["terminals"].opened) == 2
    # The terminal resends record 7 after the gateway restarted: still not a second opening.
    actuators, decisions, service, _ = run_identified(store, [identified("M-42", serial="7"),
                                                              identified("M-42", serial="9")])
    assert decisions == [("access.granted", "north-gate", "face", "granted")] and service.duplicates == 1
    # The same record number from another terminal is another event.
    _, decisions, _, _ = run_identified(store, [identified("M-42", serial="7", reader="t2")],
                                        doors=FACE_DOORS + [DoorConfig(id="side", device="terminals", reader="t2",
                                                                       methods=["card", "face"])])
    assert [d[1] for d in decisions] == ["side"]


def test_the_local_log_is_pruned_after_its_retention_and_face_records_can_be_deleted(tmp_path):
    store_path = tmp_path / "access.db"
    run_identified(store_path, [identified("M-42", serial="1"), identified("cardno:77", method="card", serial="2"),
                                identified("M-42", serial="3")], sync=face_snapshot())
    store = AccessStore(store_path)
    try:
        assert len(store.log_entries()) == 3
        assert store.delete_face_records("res-0042") == 2
        assert [(e["method"], e["person_id"]) for e in store.log_entries()] == [("card", None)]
        assert store.prune_log("9999-01-01T00:00:00.000Z") == 1
        assert store.log_entries() == [] and store.terminal_serials("0000") == []
    finally:
        store.close()
