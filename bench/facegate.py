"""Benchmark of face gates: 1:N search, camera frame to door output, and card read to door output.

    .venv/bin/python bench/facegate.py [--models-dir ../shared/models] [--walks 40] [--quick]

Galleries of 1k, 10k, 50k and 100k members: random normalised templates of the embedder's dimension
(one per synthetic member) plus the real enrolled persons (celebrities_13 id00-id05, enrolled from
all their photos but the first). Probes are real gate-camera frames: the first photo of an enrolled
person walking up to the virtual gate camera (simulator/gate_camera.py), never an enrolled photo.
Everything runs on one core: onnxruntime and OpenCV with 1 thread, BLAS with 1 thread.

Prints:
  (a) 1:N search alone (FaceGallery.search of a real probe), p50/p95 per gallery size
                                                                              target <= 5 ms at 100k
  (b) camera frame to door output command, per gallery size, through the real chain: the confirming
      frame (decoded, as the frame hub offers it) -> FaceGate (detect, align, embed, search, N-of-M)
      -> internal `access.identified` on the real EventBus -> the real AccessService (policy with face
      credentials and a rule allowing face) -> the real OsdpDriver.open_door -> libosdp over a
      pseudo-terminal (secure channel) -> the VirtualOsdpReader receives the output command.
      p50/p95 of the whole, of the in-process part (frame -> open_door called) and of the bus part
      (open_door called -> the reader has the command)              target p95 <= 100 ms at 50k
  (c) card read to output command on the same OSDP bus: swipe at the reader -> card data on the next
      poll -> access.card_read -> AccessService -> open_door -> the reader has the output command;
      p50/p95, the measured poll interval, and the part beyond one poll interval
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads: one core, as on the target

import argparse
import asyncio
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
sys.path.insert(0, str(ROOT))
import numpy as np
from isolated import peak_rss_mb

ENROLLED = ["id00", "id01", "id02", "id03", "id04", "id05"]
SIZES = [1_000, 10_000, 50_000, 100_000]
KEY = "00112233445566778899aabbccddeeff"
ALL_WEEK = [{"day": d, "start": "00:00", "end": "24:00"} for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]
DOOR, DEVICE, READER_ADDRESS = "north-gate", "osdp-bus-1", 1


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


def p50_p95(values) -> str:
    return f"p50 {pct(values, 50):6.2f} ms  p95 {pct(values, 95):6.2f} ms"


# ---------------------------------------------------------------------------------- the rig


class Rig:
    """The event bus and access service on an asyncio loop in a thread, the OSDP driver on that loop,
    and a virtual reader on a pseudo-terminal recording when each command arrives."""

    def __init__(self, tmp: Path):
        import osdp

        from drivers.osdp import OsdpDriver, OsdpSettings
        from gateway.access.service import READ_EVENT_TYPES, AccessService
        from gateway.access.store import AccessStore
        from gateway.bus import EventBus
        from gateway.config import DoorConfig
        from gateway.frames import FrameHub
        from gateway.health import HealthRegistry
        from gateway.supervisor import DriverContextImpl
        from simulator.osdp_reader import VirtualOsdpReader

        rig = self
        self.output_seen: list[float] = []  # perf_counter when the reader received each output command
        self.messages_seen: list[float] = []  # perf_counter of every CP -> reader transmission
        self.open_called: list[float] = []  # perf_counter when the access service called open_door
        self.card_events: list[float] = []  # perf_counter when access.card_read reached the bus

        class TimedReader(VirtualOsdpReader):
            def _on_command(self, command: dict):
                if command.get("command") == osdp.Command.Output:
                    rig.output_seen.append(time.perf_counter())
                return super()._on_command(command)

        self.reader = TimedReader(address=READER_ADDRESS, scbk=bytes.fromhex(KEY))
        channel_read = self.reader.channel.read

        def timed_read(max_bytes: int) -> bytes:  # what the reader hears: polls and commands
            data = channel_read(max_bytes)
            if data:
                rig.messages_seen.append(time.perf_counter())
            return data

        self.reader.channel.read = timed_read
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True).start()
        self.bus = EventBus()
        settings = OsdpSettings(id=DEVICE, kind="osdp", port=self.reader.port,
                                readers=[{"address": READER_ADDRESS, "name": "north-gate-in", "scbk": KEY}])
        self.health = HealthRegistry()
        self.driver = OsdpDriver(settings, DriverContextImpl(DEVICE, self.bus, self.health, FrameHub()))

        class TimedActuator:  # the real driver, with the moment the service asks it to open noted
            def open_door(self, reader, seconds):
                rig.open_called.append(time.perf_counter())
                return rig.driver.open_door(reader, seconds)

            def feedback(self, reader, granted):
                return rig.driver.feedback(reader, granted)

        self.store = AccessStore(tmp / "access.db")
        door = DoorConfig(id=DOOR, device=DEVICE, reader=READER_ADDRESS, open_for=1.0, methods=["card", "face"])
        self.service = AccessService(self.bus, self.store, self.store.load_policy(), [door], "Asia/Shanghai",
                                     {DEVICE: TimedActuator()})
        # Subscribed before the access service, so it notes the read before the service decides.
        self.bus.subscribe("card-timing", lambda e: rig.card_events.append(time.perf_counter()), ["access.card_read"])
        self.bus.subscribe("access", self.service.on_read, READ_EVENT_TYPES)
        self.run(self.bus.start())
        self.reader.start()
        self.driver_task = asyncio.run_coroutine_threadsafe(self.driver.run(), self.loop)
        deadline = time.monotonic() + 40
        while not (self.reader.online and self.reader.secure):
            if time.monotonic() > deadline:
                raise RuntimeError("the virtual reader did not come online")
            time.sleep(0.05)

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def sync(self, persons: list[str], card: str) -> None:
        """Persons with face credentials (value = the gallery's person id) and one card; a rule allowing both."""
        credentials = [{"kind": "face", "value": p, "person_id": p} for p in persons]
        credentials.append({"kind": "card", "value": card, "person_id": persons[0]})
        result = self.run(self.service.sync_command({
            "version": 1, "mode": "snapshot",
            "persons": [{"person_id": p, "groups": ["members"]} for p in persons],
            "credentials": credentials,
            "rules": [{"rule_id": "members", "door_id": DOOR, "group": "members", "windows": ALL_WEEK,
                       "methods": ["card", "face"]}]}))
        if not result.get("applied"):
            raise RuntimeError(f"access.sync not applied: {result}")

    def wait_output(self, count: int, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while len(self.output_seen) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the reader did not receive the output command")
            time.sleep(0.0005)
        return self.output_seen[count - 1]

    def poll_interval_ms(self) -> float:
        """Median gap between transmissions the reader hears while idle (its polls)."""
        start = len(self.messages_seen)
        time.sleep(3.0)
        gaps = np.diff(self.messages_seen[start:]) * 1000
        return float(np.median(gaps)) if len(gaps) else float("nan")

    def close(self) -> None:
        self.driver_task.cancel()
        time.sleep(0.3)
        self.run(self.bus.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.reader.stop()
        self.store.close()


# ------------------------------------------------------------------------------- the phases


def build_probes(models_dir: str):
    """(detector, embedder, enrolled templates, probe walks: {person: [frames]}, probe vectors)."""
    import cv2

    from gateway.faces.calibrate import embed_photos, load_listing
    from gateway.faces.embed import FaceEmbedder
    from gateway.vision.detect import FaceDetector
    from simulator.gate_camera import CELEBRITY_LISTING, frames

    cv2.setNumThreads(1)
    detector = FaceDetector.from_model("yunet", models_dir, threads=1)
    embedder = FaceEmbedder.from_model("mobilefacenet", models_dir, threads=1)
    photos = load_listing(CELEBRITY_LISTING)
    embedded = embed_photos({p: photos[p][1:] for p in ENROLLED}, detector, embedder)
    templates: dict[str, list] = {}
    for vector, person in zip(embedded.vectors, embedded.labels):
        templates.setdefault(person, []).append(vector)
    walks = {p: list(frames([photos[p][0]], 10.0)) for p in ENROLLED}
    probe_vectors = [v for v in embed_photos({p: photos[p][:1] for p in ENROLLED}, detector, embedder).vectors]
    return detector, embedder, templates, walks, probe_vectors


def grow(gallery, size: int, real_templates: int, rng, dim: int, start: int) -> int:
    """Add synthetic members until the gallery has `size` members besides the real ones' templates."""
    members = start
    target = size - len(ENROLLED)
    if target > members:
        vectors = rng.standard_normal((target - members, dim)).astype(np.float32)
        for i, vector in enumerate(vectors):
            gallery.add(f"syn-{members + i:06d}", vector)
        members = target
    return members


def search_times(gallery, probes, runs: int) -> list[float]:
    gallery.search(probes[0])  # the per-person grouping is cached on the first search
    times = []
    for i in range(runs):
        probe = probes[i % len(probes)]
        t0 = time.perf_counter()
        gallery.search(probe)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def chain_times(rig: Rig, gate, walks: dict, n_walks: int) -> dict:
    """Walks of enrolled persons up to the gate; per match, the frame -> output command timings."""
    from gateway.events import Event

    total, in_process, bus_part, gate_ms = [], [], [], []
    persons = list(walks)
    for w in range(n_walks):
        person = persons[w % len(persons)]
        gate.forget_person(person)  # a new visit: last visit's cooldown does not apply
        gate.matcher.forget(gate.key)
        outputs_before, opens_before = len(rig.output_seen), len(rig.open_called)
        matched = False
        for frame in walks[person]:
            t_frame = time.perf_counter()
            result = gate.process(frame)
            if result.verdict != "match":
                continue
            t_gate = time.perf_counter()
            rig.bus.publish(Event("access.identified", "gate-cam-1", {
                "door": DOOR, "reader": None, "method": "face", "value": str(result.person_id),
                "score": round(result.score, 4)}, internal=True))
            if result.person_id != person:
                raise RuntimeError(f"{person} was recognised as {result.person_id}")
            t_output = rig.wait_output(outputs_before + 1)
            t_open = rig.open_called[opens_before]
            total.append((t_output - t_frame) * 1000)
            in_process.append((t_open - t_frame) * 1000)
            bus_part.append((t_output - t_open) * 1000)
            gate_ms.append((t_gate - t_frame) * 1000)
            matched = True
            break
        if not matched:
            raise RuntimeError(f"{person} was not matched on the walk")
        time.sleep(0.05)  # the LED and buzzer commands that follow the output leave the bus
    return {"total": total, "in_process": in_process, "bus": bus_part, "gate": gate_ms}


def card_times(rig: Rig, n: int) -> dict:
    from gateway.access.wiegand import encode_h10301

    bits, data = encode_h10301(12, 3456)
    total, to_event, event_to_output, decide, on_bus = [], [], [], [], []
    rng = np.random.default_rng(2)
    for _ in range(n):
        outputs_before, events_before, opens_before = len(rig.output_seen), len(rig.card_events), len(rig.open_called)
        time.sleep(0.2 + 0.1 * rng.random())  # swipes at arbitrary phases of the poll
        t_swipe = time.perf_counter()
        if not rig.reader.swipe(data.hex(), bits):
            raise RuntimeError("the reader refused the swipe")
        t_output = rig.wait_output(outputs_before + 1)
        t_event = rig.card_events[events_before]
        total.append((t_output - t_swipe) * 1000)
        to_event.append((t_event - t_swipe) * 1000)
        event_to_output.append((t_output - t_event) * 1000)
        t_open = rig.open_called[opens_before]
        decide.append((t_open - t_event) * 1000)
        on_bus.append((t_output - t_open) * 1000)
        time.sleep(0.05)
    return {"total": total, "to_event": to_event, "event_to_output": event_to_output, "decide": decide,
            "on_bus": on_bus}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=os.environ.get("GATEWAY_MODELS_DIR",
                                                               str(ROOT.parent / "shared" / "models")))
    parser.add_argument("--walks", type=int, default=40, help="visits per gallery size in (b)")
    parser.add_argument("--searches", type=int, default=500, help="searches per gallery size in (a)")
    parser.add_argument("--cards", type=int, default=40, help="card swipes in (c)")
    parser.add_argument("--quick", action="store_true", help="1k and 10k only, fewer samples")
    args = parser.parse_args()
    if args.quick:
        args.walks, args.searches, args.cards = 12, 100, 12
    sizes = SIZES[:2] if args.quick else SIZES
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime

    from gateway.faces.gallery import FaceGallery, MatchPolicy
    from gateway.faces.gate import FaceGate

    print(f"machine: {os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__} with 1 intra-op thread, "
          f"OpenCV 1 thread, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}; numpy {np.__version__}")
    detector, embedder, templates, walks, probes = build_probes(args.models_dir)
    dim = probes[0].shape[0]
    print(f"enrolled: {len(templates)} real persons ({sum(len(v) for v in templates.values())} templates), "
          f"probes: first photo of each walking up (gate camera 640x480, 10 fps), {dim}-d {embedder.__class__.__name__}")

    gallery = FaceGallery(dim=dim, chunk=4096)
    for person, vectors in templates.items():
        gallery.add(person, np.stack(vectors))
    rng = np.random.default_rng(1)
    policy = MatchPolicy(threshold=0.45, margin=0.05, min_face_px=48, confirm_n=2, confirm_m=3, cooldown_s=10)
    gate = FaceGate("north-gate", detector, embedder, lambda: gallery, policy)

    with tempfile.TemporaryDirectory(prefix="facegate-bench-") as tmp:
        rig = Rig(Path(tmp))
        try:
            rig.sync(ENROLLED, "h10301:12:3456")
            poll_ms = rig.poll_interval_ms()
            members = 0
            search_rows, chain_rows = [], []
            for size in sizes:
                members = grow(gallery, size, len(gallery), rng, dim, members)
                searches = search_times(gallery, probes, args.searches)
                search_rows.append((size, len(gallery), searches))
                chain_rows.append((size, chain_times(rig, gate, walks, args.walks)))
            cards = card_times(rig, args.cards)
        finally:
            rig.close()

    print("(a) 1:N search alone (FaceGallery.search, one real probe against every member), target <= 5 ms at 100k")
    for size, templates_n, times in search_rows:
        print(f"      {size:>7,} members ({templates_n:>7,} templates): {p50_p95(times)}")
    print(f"(b) camera frame to door output command ({args.walks} visits per size), target p95 <= 100 ms at 50k")
    for size, t in chain_rows:
        print(f"      {size:>7,} members: total {p50_p95(t['total'])}")
        print(f"               in-process (frame -> open_door called) {p50_p95(t['in_process'])}"
              f"   [FaceGate alone {p50_p95(t['gate'])}]")
        print(f"               OSDP bus (open_door -> reader has it)  {p50_p95(t['bus'])}")
    stages = gate.times.summary()
    print("      gate stages over all frames: " + ", ".join(
        f"{k} mean {v['mean_ms']:.2f} / p95 {v['p95_ms']:.2f} ms" for k, v in stages.items()))
    beyond = [t - poll_ms for t in cards["total"]]
    print(f"(c) card read to output command on the same OSDP bus ({args.cards} swipes; the reader is polled "
          f"every {poll_ms:.1f} ms, measured at the reader)")
    print(f"      total {p50_p95(cards['total'])}")
    print(f"      beyond one poll interval {p50_p95(beyond)}")
    print(f"      swipe -> access.card_read on the bus {p50_p95(cards['to_event'])};"
          f" access.card_read -> reader has the output command {p50_p95(cards['event_to_output'])}")
    print(f"      of which the gateway's decision (access.card_read -> open_door called) {p50_p95(cards['decide'])},"
          f" and libosdp's next exchange with the reader (open_door -> reader has it) {p50_p95(cards['on_bus'])}")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
