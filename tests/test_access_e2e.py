"""A door end to end: virtual OSDP reader on a pty -> gateway process -> decision -> door and platform.

The rules arrive by the `access.sync` command; a card swiped at the reader opens the door (the
reader sees the output pulse and a green LED) and `access.granted` reaches the platform; an unknown
card gets a red LED and `access.denied`. Then the broker goes away: decisions go on.
"""

from __future__ import annotations

import pytest

from gateway.access.wiegand import encode_h10301
from simulator.brokers import free_port
from simulator.osdp_reader import VirtualOsdpReader
from simulator.process import GatewayProcess, write_config

TOKEN = "test-token-0123456789"
KEY = "00112233445566778899aabbccddeeff"
ALL_WEEK = [{"day": d, "start": "00:00", "end": "24:00"} for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]


def wait(predicate, platform, timeout=30) -> bool:
    return platform.wait_for(predicate, timeout=timeout)


@pytest.fixture
def reader():
    virtual = VirtualOsdpReader(address=1, scbk=bytes.fromhex(KEY)).start()
    yield virtual
    virtual.stop()


def test_cards_open_the_door_locally_and_decisions_go_up(tmp_path, mosquitto, platform, reader):
    api_port = free_port()
    device = {"id": "osdp-bus-1", "kind": "osdp", "port": reader.port,
              "readers": [{"address": 1, "name": "north-gate-in", "scbk": KEY}]}
    config = write_config(tmp_path / "gw.yaml", site_id="s1", gateway_id="g1", broker_port=mosquitto.port,
                          api_port=api_port, db_path=tmp_path / "gw.db", token=TOKEN, devices=[device],
                          extra={"timezone": "Asia/Shanghai",
                                 "access": {"doors": [{"id": "north-gate", "device": "osdp-bus-1", "reader": 1,
                                                       "open_for": "2s"}]}})
    gateway = GatewayProcess(config, api_port).start()
    try:
        assert wait(lambda: reader.online and reader.secure, platform), gateway.log_tail()
        ack = platform.wait_ack(platform.send_command("s1", "g1", "access.sync", {
            "version": 1, "mode": "snapshot",
            "persons": [{"person_id": "res-0042", "groups": ["residents"]}],
            "credentials": [{"kind": "card", "value": "h10301:12:3456", "person_id": "res-0042"}],
            "rules": [{"rule_id": "r1", "door_id": "north-gate", "group": "residents", "windows": ALL_WEEK}]}))
        assert ack["ok"] is True, ack

        bits, data = encode_h10301(12, 3456)
        assert reader.swipe(data.hex(), bits)
        assert wait(lambda: platform.count(type="access.granted") == 1, platform), gateway.log_tail()
        granted = platform.events(type="access.granted")[0]["data"]
        assert granted == {"door": "north-gate", "method": "card", "person_id": "res-0042", "reason": "granted"}
        assert wait(lambda: len(reader.outputs) >= 1, platform)
        assert wait(lambda: any(led.get("on_color") == 2 for led in reader.leds), platform)  # 2 = green

        bits, data = encode_h10301(12, 9999)
        assert reader.swipe(data.hex(), bits)
        assert wait(lambda: platform.count(type="access.denied") == 1, platform)
        assert platform.events(type="access.denied")[0]["data"]["reason"] == "unknown_credential"
        assert wait(lambda: any(led.get("on_color") == 1 for led in reader.leds), platform)  # 1 = red
        # Raw card reads never go up, only the decisions.
        assert platform.count(type="access.card_read") == 0

        # The uplink goes down: the door still opens, the decision waits in the outbox.
        mosquitto.stop()
        outputs_before = len(reader.outputs)
        bits, data = encode_h10301(12, 3456)
        assert reader.swipe(data.hex(), bits)
        assert wait(lambda: len(reader.outputs) > outputs_before, platform)
        assert wait(lambda: gateway.health()["backlog"]["events"] >= 1, platform)
    finally:
        gateway.kill()
