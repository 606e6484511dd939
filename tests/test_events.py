"""The envelope and the rules on event types and ids."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from hypothesis import given, settings, strategies as st

from gateway.events import Event, envelope_json, envelope_parts, new_event_id, normalise_timestamp, utc_timestamp


def test_envelope_has_every_field_and_is_compact_json():
    event = Event("visit.entry", "cam-1", {"line": "L1", "名": "入口"})
    body = envelope_json(event, site_id="s1", gateway_id="g1", seq=42)
    assert json.loads(body) == {"event_id": event.event_id, "type": "visit.entry", "ts": event.ts, "site_id": "s1",
                                "gateway_id": "g1", "device_id": "cam-1", "seq": 42,
                                "data": {"line": "L1", "名": "入口"}}
    assert " " not in body.replace("名", "") and "入口" in body  # compact, UTF-8 kept as is
    head, tail = envelope_parts(event, site_id="s1", gateway_id="g1")
    assert (head + b"42" + tail).decode() == body


def test_event_ids_are_uuid7_and_time_ordered():
    ids = [new_event_id() for _ in range(1000)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)


@pytest.mark.parametrize("bad_type", ["visit", "Visit.entry", "visit..entry", "visit.entry ", "ack.received",
                                      "", "a." + "x" * 80])
def test_bad_event_types_are_refused_where_the_event_is_made(bad_type):
    with pytest.raises(ValueError):
        Event(bad_type, "cam-1", {})


@pytest.mark.parametrize("bad_device", ["", "-cam", "cam 1", "cam/1", "x" * 200])
def test_bad_device_ids_are_refused(bad_device):
    with pytest.raises(ValueError):
        Event("visit.entry", bad_device, {})


@pytest.mark.parametrize("data", [{"x": object()}, {1: "int key"}, {"x": {1, 2}}])
def test_data_that_is_not_json_is_refused_by_the_encoder(data):
    with pytest.raises(ValueError, match="data is not JSON"):
        envelope_parts(Event("visit.entry", "cam-1", data), site_id="s", gateway_id="g")


def test_non_finite_numbers_go_up_as_null_since_json_has_none():
    body = envelope_json(Event("visit.entry", "cam-1", {"a": math.nan, "b": math.inf, "c": 1.5}),
                         site_id="s", gateway_id="g", seq=1)
    assert json.loads(body)["data"] == {"a": None, "b": None, "c": 1.5}


def test_timestamps_are_utc_with_milliseconds():
    ts = utc_timestamp()
    assert ts.endswith("Z") and len(ts) == 24
    assert normalise_timestamp("2026-11-22T16:00:00+08:00") == "2026-11-22T08:00:00.000Z"
    assert normalise_timestamp("2026-11-22T08:00:00.5Z") == "2026-11-22T08:00:00.500Z"
    with pytest.raises(ValueError, match="zone"):
        normalise_timestamp("2026-11-22T08:00:00")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_normalise_timestamp_never_fails_other_than_value_error(text):
    try:
        out = normalise_timestamp(text)
    except (ValueError, OverflowError):
        return
    assert out.endswith("Z")
