"""The durable outbox on a real SQLite file: sequence numbers, durability, delivery, de-duplication,
the byte and age caps with their priorities and alarms, failed transactions and the envelope."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid

import pytest

from gateway.events import Event, Priority, envelope_json
from gateway.outbox import ALARM_EVENT_TYPE, Accepted, Outbox, OutboxClosed, PriorityRules
from support import outbox_rows

TS = "2026-01-02T03:04:05.678Z"


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "data" / "outbox.db"


@pytest.fixture
def open_outbox(db_path):
    """Open outboxes on `db_path` (default site s1 / gateway g1); all are closed at teardown."""
    opened: list[Outbox] = []

    def make(**options) -> Outbox:
        options = {"site_id": "s1", "gateway_id": "g1", **options}
        outbox = Outbox(db_path, **options).open()
        opened.append(outbox)
        return outbox

    yield make
    for outbox in opened:
        outbox.close()


def ev(type: str = "door.opened", n: int = 0, pad: int = 0, **kw) -> Event:
    data = {"n": n, **({"pad": "x" * pad} if pad else {})}
    return Event(type, kw.pop("device_id", "door-1"), data, **kw)


rows = outbox_rows


def seqs(accepted: list[Accepted]) -> list[int]:
    return [a.seq for a in accepted]


def noop(outbox: Outbox) -> None:
    """One more (empty) transaction, e.g. to run the prune that goes with it."""
    outbox.run_in_writer(lambda conn: None).result(10)


# ------------------------------------------------------------------------------ seq numbers


def test_seq_strictly_increasing_across_batches(open_outbox):
    outbox = open_outbox()
    first = seqs(outbox.accept([ev(n=i) for i in range(3)]))
    second = seqs(outbox.accept([ev(n=i) for i in range(2)]))
    assert first + second == [1, 2, 3, 4, 5]
    assert outbox.stats().last_seq == 5


def test_seq_increasing_with_concurrent_producers(open_outbox, db_path):
    outbox = open_outbox()
    futures = []
    lock = threading.Lock()

    def produce(k):
        for i in range(50):
            f = outbox.submit([ev(n=k * 1000 + i), ev(n=k * 1000 + i)])
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_seqs = sorted(s for f in futures for s in seqs(f.result(10)))
    assert all_seqs == list(range(1, 401))
    assert [r["seq"] for r in rows(db_path)] == all_seqs


def test_seq_continues_after_reopen_even_when_everything_was_delivered(open_outbox, db_path):
    outbox = open_outbox()
    accepted = seqs(outbox.accept([ev(n=i) for i in range(4)]))
    assert outbox.delivered(accepted).result(10) == 4
    assert outbox.stats().backlog_events == 0
    outbox.close()
    assert rows(db_path) == []

    reopened = open_outbox()
    assert reopened.stats().last_seq == 4
    assert seqs(reopened.accept([ev()])) == [5]


def test_accepted_events_survive_reopen_with_same_seq_and_body(open_outbox, db_path):
    outbox = open_outbox()
    events = [ev(n=i) for i in range(3)]
    accepted = outbox.accept(events)
    before = rows(db_path)
    outbox.close()

    reopened = open_outbox()
    after = rows(db_path)
    assert after == before
    assert [r["seq"] for r in after] == seqs(accepted)
    assert [json.loads(r["body"])["event_id"] for r in after] == [e.event_id for e in events]
    stats = reopened.stats()
    assert (stats.backlog_events, stats.backlog_bytes) == (3, sum(r["size"] for r in after))
    pending = reopened.pending_after(0, 10)
    assert [(p.seq, p.body) for p in pending] == [(r["seq"], r["body"]) for r in after]


def test_pending_after(open_outbox):
    outbox = open_outbox()
    outbox.accept([ev("access.granted", n=1), ev("door.opened", n=2), ev("access.denied", n=3)])
    pending = outbox.pending_after(1, 10)
    assert [(p.seq, p.stream) for p in pending] == [(2, "door"), (3, "access")]
    assert [p.seq for p in outbox.pending_after(0, 2)] == [1, 2]
    assert all(p.size == len(p.body) for p in pending)


# -------------------------------------------------------------------------------- delivery


def test_delivered_removes_exactly_the_given_seqs(open_outbox, db_path):
    outbox = open_outbox()
    accepted = outbox.accept([ev(n=i, pad=10 * i) for i in range(6)])
    sizes = {r["seq"]: r["size"] for r in rows(db_path)}
    assert outbox.delivered([2, 4, 5]).result(10) == 3
    remaining = rows(db_path)
    assert [r["seq"] for r in remaining] == [1, 3, 6]
    stats = outbox.stats()
    assert stats.backlog_events == 3
    assert stats.backlog_bytes == sizes[1] + sizes[3] + sizes[6]
    assert stats.counters["delivered"] == 3
    assert stats.counters["accepted"] == len(accepted)


def test_delivered_twice_or_unknown_seqs_change_nothing(open_outbox):
    outbox = open_outbox()
    outbox.accept([ev(), ev()])
    assert outbox.delivered([1]).result(10) == 1
    before = outbox.stats()
    assert outbox.delivered([1, 99]).result(10) == 0
    assert outbox.delivered([]).result(10) == 0
    after = outbox.stats()
    assert before.backlog_events == after.backlog_events == 1
    assert after.backlog_bytes == before.backlog_bytes
    assert after.counters["delivered"] == 1


# ------------------------------------------------------------------------------- dedupe


def test_dedupe_returns_the_original_seq(open_outbox, db_path):
    outbox = open_outbox()
    event = ev(n=1)
    [first] = outbox.accept([event], dedupe=True)
    outbox.accept([ev(n=2)], dedupe=True)
    [again] = outbox.accept([ev(n=99, event_id=event.event_id)], dedupe=True)
    assert first == Accepted(event.event_id, 1, False)
    assert again == Accepted(event.event_id, 1, True)
    assert len(rows(db_path, "event_id = ?", (event.event_id,))) == 1
    assert json.loads(rows(db_path)[0]["body"])["data"] == {"n": 1}  # the first one is kept


def test_dedupe_within_one_batch(open_outbox, db_path):
    outbox = open_outbox()
    a, b = ev(n=1), ev(n=2)
    result = outbox.accept([a, b, ev(n=3, event_id=a.event_id)], dedupe=True)
    assert result == [Accepted(a.event_id, 1, False), Accepted(b.event_id, 2, False),
                      Accepted(a.event_id, 1, True)]
    assert len(rows(db_path)) == 2
    assert outbox.stats().last_seq == 2  # no seq was used up by the duplicate


def test_dedupe_survives_reopen_and_delivery(open_outbox, db_path):
    outbox = open_outbox()
    event = ev()
    outbox.accept([ev(), event], dedupe=True)
    outbox.delivered([1, 2]).result(10)
    outbox.close()
    reopened = open_outbox()
    assert reopened.accept([event], dedupe=True) == [Accepted(event.event_id, 2, True)]
    assert rows(db_path) == []


def test_without_dedupe_a_repeated_event_id_is_stored_again(open_outbox, db_path):
    outbox = open_outbox()
    event = ev()
    assert seqs(outbox.accept([event]) + outbox.accept([event])) == [1, 2]
    assert len(rows(db_path, "event_id = ?", (event.event_id,))) == 2


# ----------------------------------------------------------------------------- priorities


def test_priority_rules():
    rules = PriorityRules(never_drop=["access", "sale", "gateway.alarm"], drop_first=["visit.counts", "device"])
    assert rules.of("access") is Priority.CRITICAL
    assert rules.of("access.granted") is Priority.CRITICAL
    assert rules.of("sale.completed.refund") is Priority.CRITICAL
    assert rules.of("gateway.alarm") is Priority.CRITICAL
    assert rules.of("gateway.started") is Priority.NORMAL
    assert rules.of("accessory.sold") is Priority.NORMAL  # a prefix of a word is not a prefix
    assert rules.of("visit.counts") is Priority.LOW
    assert rules.of("visit.counts.hourly") is Priority.LOW
    assert rules.of("visit.started") is Priority.NORMAL
    assert rules.of("device.status") is Priority.LOW
    assert rules.of("door.opened") is Priority.NORMAL


def test_never_drop_wins_over_drop_first():
    rules = PriorityRules(never_drop=["visit"], drop_first=["visit.counts"])
    assert rules.of("visit.counts") is Priority.CRITICAL


def test_stored_priority_follows_the_rules(open_outbox, db_path):
    outbox = open_outbox()
    outbox.accept([ev("sale.completed"), ev("visit.counts"), ev("door.opened")])
    assert [(r["type"], r["priority"]) for r in rows(db_path)] == [
        ("sale.completed", Priority.CRITICAL), ("visit.counts", Priority.LOW), ("door.opened", Priority.NORMAL)]


# ---------------------------------------------------------------------------------- byte cap

PAD = 400  # each event body is a bit over 500 bytes
BODY = len(envelope_json(Event("visit.counts", "door-1", {"n": 0, "pad": "x" * PAD}), site_id="s1",
                         gateway_id="g1", seq=1))  # sizes differ by a byte or two with seq and n


def by_priority(path) -> dict[Priority, list[int]]:
    result: dict[Priority, list[int]] = {p: [] for p in Priority}
    for r in rows(path):
        result[Priority(r["priority"])].append(r["seq"])
    return result


def alarms(path) -> list[dict]:
    return [json.loads(r["body"])["data"] for r in rows(path, "type = ?", (ALARM_EVENT_TYPE,))]


def test_byte_cap_drops_low_then_normal_never_critical(open_outbox, db_path):
    cap = 8 * BODY + BODY // 2  # room for 8 events
    outbox = open_outbox(max_bytes=cap)

    low = seqs(outbox.accept([ev("visit.counts", n=i, pad=PAD) for i in range(4)]))
    normal = seqs(outbox.accept([ev("door.opened", n=i, pad=PAD) for i in range(4)]))
    assert outbox.stats().counters.get("dropped_low", 0) == 0  # 8 events fit

    critical = seqs(outbox.accept([ev("access.granted", n=i, pad=PAD) for i in range(2)]))
    kept = by_priority(db_path)
    assert kept[Priority.LOW] == low[2:]  # the two oldest LOW ones made room
    assert kept[Priority.NORMAL] == normal
    assert outbox.stats().backlog_bytes <= cap

    critical += seqs(outbox.accept([ev("sale.completed", n=i, pad=PAD) for i in range(3)]))
    kept = by_priority(db_path)
    assert kept[Priority.LOW] == []  # all LOW went before any NORMAL...
    assert kept[Priority.NORMAL] == normal[1:]  # ...then the oldest NORMAL one
    assert kept[Priority.CRITICAL] == critical
    counters = outbox.stats().counters
    assert (counters["dropped_low"], counters["dropped_normal"]) == (4, 1)
    assert "alarm_storage_full" not in counters and alarms(db_path) == []


def test_byte_cap_with_only_critical_events_raises_one_alarm(open_outbox, db_path):
    cap = 3 * BODY + BODY // 2
    outbox = open_outbox(max_bytes=cap)

    outbox.accept([ev("visit.counts", pad=PAD), ev("door.opened", pad=PAD)])
    critical = []
    for batch in range(5):  # each batch goes (further) over the cap
        critical += seqs(outbox.accept([ev("points.earned", n=batch * 10 + i, pad=PAD) for i in range(2)]))

    kept = by_priority(db_path)
    [alarm_row] = rows(db_path, "type = ?", (ALARM_EVENT_TYPE,))
    assert kept[Priority.LOW] == kept[Priority.NORMAL] == []
    assert kept[Priority.CRITICAL] == sorted(critical + [alarm_row["seq"]])  # every critical event is kept
    assert outbox.stats().backlog_bytes > cap  # over the cap rather than lose a critical event
    [alarm] = alarms(db_path)
    assert alarm["alarm"] == "storage_full" and alarm["max_bytes"] == cap
    assert json.loads(alarm_row["body"])["device_id"] == "g1"
    counters = outbox.stats().counters
    assert (counters["dropped_low"], counters["dropped_normal"], counters["alarm_storage_full"]) == (1, 1, 1)

    outbox.close()
    reopened = open_outbox(max_bytes=cap)
    assert {k: reopened.stats().counters[k] for k in ("dropped_low", "dropped_normal", "alarm_storage_full")} == {
        "dropped_low": 1, "dropped_normal": 1, "alarm_storage_full": 1}


def test_back_under_the_cap_a_new_overflow_alarms_again(open_outbox, db_path):
    outbox = open_outbox(max_bytes=2 * BODY + BODY // 2)
    first = seqs(outbox.accept([ev("access.granted", n=i, pad=PAD) for i in range(3)]))
    assert len(alarms(db_path)) == 1
    outbox.delivered(first + [r["seq"] for r in rows(db_path, "type = ?", (ALARM_EVENT_TYPE,))]).result(10)
    assert outbox.stats().backlog_events == 0  # back under the cap
    outbox.accept([ev("access.granted", n=i, pad=PAD) for i in range(3)])
    assert len(alarms(db_path)) == 1  # the first alarm was delivered; this is the second one
    assert outbox.stats().counters["alarm_storage_full"] == 2


# ----------------------------------------------------------------------------------- age cap


def test_age_cap_drops_old_low_and_normal_keeps_critical_with_alarm(open_outbox, db_path):
    outbox = open_outbox(max_age=0.2, prune_interval=0)
    outbox.accept([ev("visit.counts", n=1), ev("door.opened", n=2), ev("access.granted", n=3),
                   ev("visit.counts", n=4), ev("door.closed", n=5)])
    time.sleep(0.3)  # now all five are older than max_age
    noop(outbox)  # its transaction prunes

    kept = rows(db_path)
    assert [json.loads(r["body"])["data"].get("n") for r in kept if r["type"] != ALARM_EVENT_TYPE] == [3]
    [alarm] = alarms(db_path)
    assert alarm["alarm"] == "critical_events_over_max_age"
    assert alarm["old_critical_events"] == 1 and alarm["max_age_seconds"] == 0.2
    counters = outbox.stats().counters
    assert (counters["dropped_low"], counters["dropped_normal"]) == (2, 2)
    assert counters["alarm_critical_events_over_max_age"] == 1

    noop(outbox)  # still old critical events: no second alarm
    noop(outbox)
    assert len(alarms(db_path)) == 1
    outbox.close()
    assert open_outbox().stats().counters["alarm_critical_events_over_max_age"] == 1


def test_age_cap_keeps_recent_events(open_outbox, db_path):
    outbox = open_outbox(max_age=3600, prune_interval=0)
    outbox.accept([ev("visit.counts"), ev("door.opened")])
    noop(outbox)
    assert len(rows(db_path)) == 2
    assert "dropped_low" not in outbox.stats().counters


# ------------------------------------------------------------------------ failed transactions


def test_failing_transaction_rejects_only_its_batch(open_outbox, db_path):
    outbox = open_outbox()
    assert seqs(outbox.accept([ev(n=1), ev(n=2)])) == [1, 2]

    # Hold the writer so that an insert and a failing call are grouped into one transaction.
    release, holding = threading.Event(), threading.Event()
    blocker = outbox.run_in_writer(lambda conn: (holding.set(), release.wait(10)))
    assert holding.wait(10)
    doomed = outbox.submit([ev(n=3), ev(n=4)])

    def fail(conn):
        conn.execute("INSERT INTO counters(name, value) VALUES ('from_failed_call', 1)")
        raise RuntimeError("disk on fire")

    failing = outbox.run_in_writer(fail)
    release.set()
    blocker.result(10)
    with pytest.raises(RuntimeError, match="disk on fire"):
        failing.result(10)
    with pytest.raises(RuntimeError, match="disk on fire"):
        doomed.result(10)

    # Nothing of that batch is there, and the outbox goes on numbering from the last committed seq.
    assert [r["seq"] for r in rows(db_path)] == [1, 2]
    assert outbox.stats().backlog_events == 2 and outbox.stats().last_seq == 2
    assert seqs(outbox.accept([ev(n=5)])) == [3]
    assert [json.loads(r["body"])["data"]["n"] for r in rows(db_path)] == [1, 2, 5]
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT value FROM counters WHERE name = 'from_failed_call'").fetchone() is None
    assert conn.execute("SELECT value FROM counters WHERE name = 'last_seq'").fetchone() == (3,)
    conn.close()


def test_failing_call_alone_leaves_the_outbox_working(open_outbox):
    outbox = open_outbox()
    with pytest.raises(ZeroDivisionError):
        outbox.run_in_writer(lambda conn: 1 / 0).result(10)
    assert seqs(outbox.accept([ev()])) == [1]
    assert outbox.run_in_writer(lambda conn: conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]).result(10) == 1


# ----------------------------------------------------------------------------------- closing


def test_submit_after_close_raises_outbox_closed(open_outbox):
    outbox = open_outbox()
    outbox.accept([ev()])
    outbox.close()
    future = outbox.submit([ev()])
    assert isinstance(future.exception(timeout=10), OutboxClosed)
    with pytest.raises(OutboxClosed):
        outbox.accept([ev()])
    with pytest.raises(OutboxClosed):
        outbox.delivered([1]).result(10)
    with pytest.raises(OutboxClosed):
        outbox.run_in_writer(lambda conn: None).result(10)


def test_close_commits_what_was_queued(open_outbox, db_path):
    outbox = open_outbox()
    futures = [outbox.submit([ev(n=i)]) for i in range(100)]
    outbox.close()
    assert sorted(s for f in futures for s in seqs(f.result(10))) == list(range(1, 101))
    assert len(rows(db_path)) == 100


# --------------------------------------------------------------------------- file and envelope


def test_journal_mode_is_wal(open_outbox, db_path):
    open_outbox().accept([ev()])
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_envelope_fields(open_outbox, db_path):
    outbox = open_outbox(site_id="mall-1", gateway_id="gw-7")
    event = Event("parking.entry", "parking-b2", {"plate": "沪A12345", "lane": 2}, ts=TS)
    [accepted] = outbox.accept([event])
    [row] = rows(db_path)
    envelope = json.loads(row["body"])
    assert envelope == {
        "event_id": event.event_id, "type": "parking.entry", "ts": TS, "site_id": "mall-1",
        "gateway_id": "gw-7", "device_id": "parking-b2", "seq": accepted.seq,
        "data": {"plate": "沪A12345", "lane": 2},
    }
    assert uuid.UUID(envelope["event_id"]).version == 7
    assert (row["event_id"], row["type"], row["stream"]) == (event.event_id, "parking.entry", "parking")
    assert row["size"] == len(row["body"]) > len(row["body"].decode("utf-8"))  # bytes, not characters
    assert outbox.stats().backlog_bytes == row["size"]


def test_an_event_that_is_not_json_is_refused_alone(tmp_path):
    """Encoding happens at submit: a bad event fails its own future and spoils no shared commit."""
    with Outbox(tmp_path / "o.db", site_id="s1", gateway_id="g1") as outbox:
        good_before = outbox.submit([Event("visit.entry", "cam-1", {"i": 1})])
        bad = outbox.submit([Event("visit.entry", "cam-1", {"x": object()})])
        good_after = outbox.submit([Event("visit.entry", "cam-1", {"i": 2})])
        assert [a.seq for a in good_before.result(5)] == [1]
        with pytest.raises(ValueError, match="not JSON"):
            bad.result(5)
        assert [a.seq for a in good_after.result(5)] == [2]
        assert outbox.stats().backlog_events == 2
