"""The gateway's face store: consent before enrolment, templates encrypted at rest, erasure, the
append-only hash-chained audit log, keys; enrolment photos; the `gateway faces` store commands.

Real SQLite files in tmp_path, read back through separate raw connections as an attacker or an
auditor would; real photos (../shared/data/faces/celebrities_13) with the real YuNet and
MobileFaceNet models (../shared/models); the command line as real subprocesses.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from support import MODELS, ROOT, need

from gateway.access.store import AccessStore
from gateway.config import load_config
from gateway.faces import (
    Consent,
    ConsentError,
    EnrolError,
    FaceEmbedder,
    FaceStore,
    FaceStoreError,
    FaceStoreKeyError,
    embed_images,
    identify_image,
    key_from_text,
    load_or_create_key,
    open_face_store,
)
from gateway.faces.calibrate import load_listing

CELEBRITIES = ROOT.parent / "shared" / "data" / "faces" / "celebrities_13"
CELEBRITY_LISTING = CELEBRITIES / "identities_from_master_and_pivot_csv.txt"
MODEL = "mobilefacenet"
NOW = datetime.now(timezone.utc)


def consent(person_id: str, **changes) -> dict:
    return {"person_id": person_id, "scope": ["access"], "notice_version": "2025-06", "given_at": NOW,
            "method": "kiosk", **changes}


def random_vectors(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def raw(path: Path) -> sqlite3.Connection:
    """The file as another process (an auditor, an attacker with the disk) opens it."""
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
def store(tmp_path):
    with FaceStore(tmp_path / "faces.db", load_or_create_key(tmp_path / "faces.key")) as opened:
        yield opened


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    need(MODELS / "face_embedding_mobilefacenet.onnx")
    return FaceEmbedder.from_model(MODEL, MODELS)


@pytest.fixture(scope="module")
def photos() -> dict[str, list[Path]]:
    """{identity: photos} of celebrities_13."""
    return load_listing(need(CELEBRITY_LISTING))


# ---------------------------------------------------------------------------- enrol and identify


def test_enrolled_person_is_identified_in_another_photo(store, photos, face_detector, embedder):
    enrolled = ["id00", "id01", "id02", "id03"]
    for person in enrolled:
        images = [p.read_bytes() for p in photos[person][:2]]
        vectors = embed_images(images, face_detector, embedder, min_face_px=48)
        assert vectors.shape == (2, 128)
        assert store.enrol(person, vectors, consent(person), MODEL, actor="test") == 2
    assert store.persons() == enrolled
    assert (store.count_persons(), store.count_templates()) == (4, 8)

    gallery = store.load_gallery(MODEL)
    assert sorted(gallery.persons()) == enrolled and len(gallery) == 8
    for person in enrolled:  # a photo not used for enrolment
        probe = photos[person][3]
        faces = identify_image(cv2.imread(str(probe)), face_detector, embedder, gallery, threshold=0.45, margin=0.05)
        assert [f["person_id"] for f in faces] == [person], (probe, faces)
        assert faces[0]["score"] >= 0.45 and len(faces[0]["box"]) == 4
    stranger = photos["id05"][0]  # never enrolled: a face, nobody
    faces = identify_image(stranger.read_bytes(), face_detector, embedder, gallery)
    assert len(faces) == 1 and faces[0]["person_id"] is None and faces[0]["score"] < 0.45


def test_identify_reports_every_face_of_a_photo(store, photos, face_detector, embedder):
    store.enrol("id00", embed_images([photos["id00"][0].read_bytes()], face_detector, embedder), consent("id00"),
                MODEL, "test")
    couple = need(CELEBRITIES / "couple.jpg").read_bytes()
    faces = identify_image(couple, face_detector, embedder, store.load_gallery(MODEL))
    assert len(faces) == 2
    assert sorted((f["person_id"] is None) for f in faces) == [False, True]
    # A face smaller than min_face_px is listed but never named.
    small = identify_image(couple, face_detector, embedder, store.load_gallery(MODEL), min_face_px=10_000)
    assert [f["person_id"] for f in small] == [None, None]


def test_enrolment_photos_must_show_exactly_one_usable_face(photos, face_detector, embedder):
    good = photos["id00"][0].read_bytes()
    couple = need(CELEBRITIES / "couple.jpg").read_bytes()
    with pytest.raises(EnrolError, match=r"couple\.jpg: 2 faces"):
        embed_images([good, couple], face_detector, embedder, names=["me.jpg", "couple.jpg"])
    with pytest.raises(EnrolError, match="image 1 is not a readable image"):
        embed_images([b"not a jpeg at all"], face_detector, embedder)
    with pytest.raises(EnrolError, match="image 2: no face found"):
        embed_images([good, np.full((480, 640, 3), 127, np.uint8)], face_detector, embedder)
    with pytest.raises(EnrolError, match="too small"):
        embed_images([good], face_detector, embedder, min_face_px=5000)
    with pytest.raises(EnrolError, match="no photos"):
        embed_images([], face_detector, embedder)
    assert issubclass(EnrolError, ValueError)
    # Bytes and a decoded array of the same photo give the same template.
    from_bytes = embed_images([good], face_detector, embedder)
    from_array = embed_images([cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR)], face_detector, embedder)
    np.testing.assert_allclose(from_bytes, from_array, atol=1e-6)


# ------------------------------------------------------------------------------------- consent


def test_enrolment_without_a_valid_consent_is_refused_and_nothing_is_stored(store, tmp_path):
    vectors = random_vectors(2)
    with pytest.raises(ConsentError, match="no consent record"):
        store.enrol("kid", vectors, None, MODEL, "test")
    with pytest.raises(ConsentError, match="guardian"):
        store.enrol("kid", vectors, consent("kid", under_14=True), MODEL, "test")
    with pytest.raises(ValidationError, match="guardian"):  # the model itself refuses it
        Consent(**consent("kid", under_14=True))
    with pytest.raises(ConsentError, match="not 'kid'"):
        store.enrol("kid", vectors, consent("someone-else"), MODEL, "test")
    with pytest.raises(ConsentError, match="given_at"):  # a naive time says nothing
        store.enrol("kid", vectors, consent("kid", given_at=datetime(2025, 6, 1, 9, 30)), MODEL, "test")
    with pytest.raises(ConsentError, match="future"):
        store.enrol("kid", vectors, consent("kid", given_at=NOW + timedelta(days=2)), MODEL, "test")
    with pytest.raises(ConsentError, match="scope"):
        store.enrol("kid", vectors, consent("kid", scope=[]), MODEL, "test")
    assert issubclass(ConsentError, ValueError)
    assert (store.count_templates(), store.audit_entries(), store.generation()) == (0, [], 0)
    with raw(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM face_consents").fetchone()[0] == 0

    guardian = {"guardian_id": "parent-7", "given_at": NOW - timedelta(hours=1)}
    assert store.enrol("kid", vectors, consent("kid", under_14=True, guardian=guardian,
                                               scope=["access", "visits"]), MODEL, "test") == 2
    kept = store.consent("kid")
    assert kept.under_14 and kept.guardian.guardian_id == "parent-7" and kept.scope == ["access", "visits"]
    assert kept.given_at == NOW and kept.notice_version == "2025-06"
    entry = store.audit_entries()[-1]
    assert entry["action"] == "enrol" and entry["detail"]["notice_version"] == "2025-06"
    assert entry["detail"]["templates"] == 2 and entry["person_id"] == "kid"

    # A new enrolment adds templates and replaces the consent record.
    store.enrol("kid", random_vectors(1, seed=3), consent("kid", under_14=True, guardian=guardian,
                                                            notice_version="2025-09"), MODEL, "test")
    assert store.count_templates() == 3 and store.consent("kid").notice_version == "2025-09"


def test_the_gallery_can_be_limited_to_a_purpose(store):
    store.enrol("a", random_vectors(1, seed=1), consent("a", scope=["access"]), MODEL, "test")
    store.enrol("v", random_vectors(1, seed=2), consent("v", scope=["visits"]), MODEL, "test")
    assert sorted(store.load_gallery(MODEL).persons()) == ["a", "v"]
    assert store.load_gallery(MODEL, purpose="access").persons() == ["a"]
    store.record_consent(consent("v", scope=["visits", "access"]), actor="test")
    assert sorted(store.load_gallery(MODEL, purpose="access").persons()) == ["a", "v"]
    assert store.audit_entries()[-1]["action"] == "consent"
    with pytest.raises(ConsentError, match="not enrolled"):
        store.record_consent(consent("nobody"), actor="test")


# ----------------------------------------------------------------------------------- encryption


def test_the_file_never_contains_a_plaintext_vector(tmp_path):
    path = tmp_path / "faces.db"
    vectors = random_vectors(3, seed=42)
    store = FaceStore(path, load_or_create_key(tmp_path / "faces.key"))
    store.enrol("p1", vectors, consent("p1"), MODEL, "test")
    store.enrol("p1", vectors * 3.0, consent("p1"), MODEL, "test")  # stored normalised: the same vectors

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("faces.db"))

    def leaks(data: bytes) -> list[str]:
        found = []
        for i, vector in enumerate(vectors):
            for dtype in ("<f4", ">f4", "<f8"):
                plain = vector.astype(dtype).tobytes()
                # The whole vector, and any 16-byte piece of it (4 consecutive float32 values).
                if plain in data or any(plain[j:j + 16] in data for j in range(0, len(plain) - 16, 4)):
                    found.append(f"vector {i} as {dtype}")
        return found

    assert leaks(on_disk()) == []  # while open (WAL and all)
    np.testing.assert_allclose(store.load_gallery(MODEL).vectors[:3], vectors, atol=1e-6)
    store.close()
    data = on_disk()
    assert leaks(data) == []
    assert leaks(vectors.tobytes()) != []  # the check itself does find a vector
    with raw(path) as conn:
        rows = conn.execute("SELECT person_id, model, dim, length(sealed) FROM face_templates").fetchall()
    # nonce (12) + ciphertext (128 * 4) + GCM tag (16): nothing but the sealed vector.
    assert rows == [("p1", MODEL, 128, 12 + 512 + 16)] * 6
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_wrong_key_fails_clearly(tmp_path):
    path = tmp_path / "faces.db"
    with FaceStore(path, os.urandom(32)) as store:
        store.enrol("p1", random_vectors(1), consent("p1"), MODEL, "test")
    with pytest.raises(FaceStoreKeyError, match="does not open the face store"):
        FaceStore(path, os.urandom(32))
    with pytest.raises(FaceStoreKeyError, match="32 bytes"):
        FaceStore(path, b"short")


def test_rows_moved_to_another_person_no_longer_decrypt(store):
    store.enrol("alice", random_vectors(1, seed=1), consent("alice"), MODEL, "test")
    store.enrol("bob", random_vectors(1, seed=2), consent("bob"), MODEL, "test")
    with raw(store.path) as conn:  # give bob alice's template
        alice = conn.execute("SELECT sealed FROM face_templates WHERE person_id = 'alice'").fetchone()[0]
        conn.execute("UPDATE face_templates SET sealed = ? WHERE person_id = 'bob'", (alice,))
    with pytest.raises(FaceStoreError, match="'bob'.*does not decrypt"):
        store.load_gallery(MODEL)


def test_templates_of_another_model_are_skipped_with_a_warning(store, caplog):
    store.enrol("old", random_vectors(2, dim=128), consent("old"), "sface", "test")
    store.enrol("new", random_vectors(2, dim=128, seed=5), consent("new"), MODEL, "test")
    with caplog.at_level(logging.WARNING, logger="gateway.faces.store"):
        gallery = store.load_gallery(MODEL)
    assert gallery.persons() == ["new"]
    assert "model sface" in caplog.text and "re-enrolment" in caplog.text
    with pytest.raises(ValueError, match="128-d"):  # one model, one dimension
        store.enrol("odd", random_vectors(1, dim=512), consent("odd"), MODEL, "test")


# ------------------------------------------------------------------------------------------ keys


def test_key_files_are_created_private_and_checked(tmp_path):
    path = tmp_path / "keys" / "faces.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["faces.key"]  # no temporary file left
    path.chmod(0o644)
    with pytest.raises(FaceStoreKeyError, match="chmod 600"):
        load_or_create_key(path)
    path.chmod(0o600)
    path.write_bytes(b"x" * 16)
    with pytest.raises(FaceStoreKeyError, match="16 bytes"):
        load_or_create_key(path)

    assert key_from_text(base64.b64encode(key).decode()) == key
    assert key_from_text(base64.urlsafe_b64encode(key).decode() + "\n") == key
    with pytest.raises(FaceStoreKeyError, match="not valid base64"):
        key_from_text("not base64!")
    with pytest.raises(FaceStoreKeyError, match="32 bytes"):
        key_from_text(base64.b64encode(b"x" * 31).decode())


def test_concurrent_key_creation_ends_with_one_key(tmp_path):
    path = tmp_path / "faces.key"
    keys, barrier = [], threading.Barrier(8)

    def create():
        barrier.wait()
        keys.append(load_or_create_key(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and keys[0] == path.read_bytes()


# -------------------------------------------------------------------------------------- erasure


def test_delete_person_erases_templates_and_consent(store, photos, face_detector, embedder):
    for person in ("id00", "id01"):
        vectors = embed_images([p.read_bytes() for p in photos[person][:3]], face_detector, embedder)
        store.enrol(person, vectors, consent(person), MODEL, "test")
    probe = photos["id00"][4].read_bytes()
    before = identify_image(probe, face_detector, embedder, store.load_gallery(MODEL))
    assert [f["person_id"] for f in before] == ["id00"]
    generation = store.generation()

    assert store.delete_person("id00", actor="test") == {"person_id": "id00", "templates": 3, "consents": 1}
    with raw(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM face_templates WHERE person_id = 'id00'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM face_consents WHERE person_id = 'id00'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM face_templates").fetchone()[0] == 3  # id01 untouched
    assert store.consent("id00") is None and store.persons() == ["id01"]
    after = identify_image(probe, face_detector, embedder, store.load_gallery(MODEL))
    assert [f["person_id"] for f in after] == [None]
    assert store.generation() == generation + 1

    # An unknown person: not an error, audited all the same.
    assert store.delete_person("never-enrolled", actor="test") == {"person_id": "never-enrolled", "templates": 0,
                                                                    "consents": 0}
    deletes = [e for e in store.audit_entries() if e["action"] == "delete"]
    assert [(e["person_id"], e["detail"]) for e in deletes] == [
        ("id00", {"templates": 3, "consents": 1}), ("never-enrolled", {"templates": 0, "consents": 0})]
    assert store.verify_audit() == (True, None)


def test_generation_shows_changes_made_by_another_connection(tmp_path):
    key = load_or_create_key(tmp_path / "faces.key")
    with FaceStore(tmp_path / "faces.db", key) as gateway, FaceStore(tmp_path / "faces.db", key) as cli:
        assert gateway.generation() == 0
        cli.enrol("p1", random_vectors(1), consent("p1"), MODEL, "cli:test")
        assert gateway.generation() == 1 and gateway.persons() == ["p1"]
        cli.record_threshold_change(0.45, 0.5, "cli:test")
        cli.delete_person("p1", "cli:test")
        assert gateway.generation() == 3 and gateway.count_persons() == 0


def test_concurrent_enrolments_from_threads(store):
    def enrol(i):
        store.enrol(f"p{i}", random_vectors(2, seed=i), consent(f"p{i}"), MODEL, "test")

    threads = [threading.Thread(target=enrol, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_persons() == 8 and store.count_templates() == 16 and store.generation() == 8
    assert store.verify_audit() == (True, None) and len(store.audit_entries()) == 8


# ---------------------------------------------------------------------------------------- audit


def _fill(store: FaceStore) -> None:
    store.enrol("p1", random_vectors(2, seed=1), consent("p1"), MODEL, "cli:alice")
    store.enrol("p2", random_vectors(1, seed=2), consent("p2"), MODEL, "cli:alice")
    store.record_threshold_change(0.45, 0.5, "cli:bob")
    store.delete_person("p1", "cli:bob")


def test_audit_chain_verifies_and_the_table_is_append_only(store):
    _fill(store)
    entries = store.audit_entries()
    assert [(e["seq"], e["action"], e["person_id"], e["actor"]) for e in entries] == [
        (1, "enrol", "p1", "cli:alice"), (2, "enrol", "p2", "cli:alice"), (3, "threshold_change", None, "cli:bob"),
        (4, "delete", "p1", "cli:bob")]
    assert entries[2]["detail"] == {"old": 0.45, "new": 0.5}
    assert entries[0]["prev_hash"] == "0" * 64 and entries[1]["prev_hash"] == entries[0]["hash"]
    assert [e["seq"] for e in store.audit_entries(limit=2)] == [3, 4]
    assert store.verify_audit() == (True, None)
    # Nothing in the audit log is a template: small JSON details only.
    with raw(store.path) as conn:
        assert max(len(d) for (d,) in conn.execute("SELECT detail FROM face_audit")) < 200
        with pytest.raises(sqlite3.DatabaseError, match="append-only: no UPDATE"):
            conn.execute("UPDATE face_audit SET actor = 'nobody' WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only: no DELETE"):
            conn.execute("DELETE FROM face_audit WHERE seq = 4")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM face_audit")
    assert len(store.audit_entries()) == 4 and store.verify_audit() == (True, None)


def _without_triggers(path: Path) -> sqlite3.Connection:
    conn = raw(path)
    conn.execute("DROP TRIGGER face_audit_no_update")
    conn.execute("DROP TRIGGER face_audit_no_delete")
    return conn


@pytest.mark.parametrize("tamper, problem", [
    ("UPDATE face_audit SET actor = 'someone-else' WHERE seq = 2", "row 2 was altered"),
    ("UPDATE face_audit SET detail = '{\"templates\":0,\"consents\":0}' WHERE seq = 4", "row 4 was altered"),
    ("DELETE FROM face_audit WHERE seq = 2", "row 2 is missing"),
    ("DELETE FROM face_audit WHERE seq = 4", "rows were removed"),  # the last row: only the head tells
    ("DELETE FROM face_audit", "rows were removed"),
    ("UPDATE face_meta SET value = replace(value, '\"seq\": 4', '\"seq\": 3') WHERE name = 'audit_head'",
     "head was altered"),
])
def test_tampering_with_the_audit_log_is_detected(store, tamper, problem):
    _fill(store)
    with _without_triggers(store.path) as conn:
        conn.execute(tamper)
    ok, found = store.verify_audit()
    assert not ok and problem in found


def test_a_rewritten_row_with_a_recomputed_hash_breaks_the_chain(store):
    """An attacker who edits a row and recomputes its hash still breaks the next row's prev_hash."""
    from gateway.faces.store import _row_hash

    _fill(store)
    with _without_triggers(store.path) as conn:
        seq, at, action, person, _, detail, prev, _ = conn.execute(
            "SELECT * FROM face_audit WHERE seq = 2").fetchone()
        forged = _row_hash(prev, seq, at, action, person, "cli:mallory", detail)
        conn.execute("UPDATE face_audit SET actor = 'cli:mallory', hash = ? WHERE seq = 2", (forged,))
    ok, problem = store.verify_audit()
    assert not ok and "row 3 does not follow row 2" in problem


# -------------------------------------------------------------------------------- the command line


def _write_config(tmp_path: Path, enabled: bool = True, name: str = "site.yaml") -> Path:
    config = tmp_path / name
    config.write_text(f"""\
site_id: test-site
gateway_id: gw-1
api:
  token: "0123456789abcdef0123456789"
storage:
  path: {tmp_path / "var" / "gateway.db"}
models:
  dir: {MODELS}
faces:
  enabled: {"true" if enabled else "false"}
""")
    return config


def gateway_cli(*args, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "gateway", "faces", *map(str, args)], check=False, cwd=ROOT,
                          env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_enroll_identify_list_delete_audit(tmp_path, photos):
    need(MODELS / "face_embedding_mobilefacenet.onnx")
    need(MODELS / "face_detection_yunet_2026may.onnx")
    config = _write_config(tmp_path)
    enrol_photos = photos["id00"][:3]
    probe = photos["id00"][4]

    done = gateway_cli("enroll", "--config", config, "--person", "id00", "--notice-version", "2025-06",
                       "--scope", "access,visits", "--consent-method", "kiosk", *enrol_photos)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"person_id": "id00", "templates": 3}
    store_path, key_path = tmp_path / "var" / "faces.db", tmp_path / "var" / "faces.key"
    assert store_path.exists() and os.stat(key_path).st_mode & 0o777 == 0o600

    done = gateway_cli("identify", "--config", config, probe)
    assert done.returncode == 0, done.stderr
    faces = json.loads(done.stdout)
    assert [f["person_id"] for f in faces] == ["id00"] and faces[0]["score"] >= 0.45

    # Refusals: a child without a guardian, a group photo; nothing is added.
    done = gateway_cli("enroll", "--config", config, "--person", "kid", "--notice-version", "2025-06",
                       "--scope", "access", "--under-14", photos["id01"][0])
    assert done.returncode == 1 and "guardian" in done.stderr and done.stdout == ""
    done = gateway_cli("enroll", "--config", config, "--person", "id01", "--notice-version", "2025-06",
                       "--scope", "access", CELEBRITIES / "couple.jpg")
    assert done.returncode == 1 and "couple.jpg: 2 faces" in done.stderr
    done = gateway_cli("enroll", "--config", config, "--person", "kid", "--notice-version", "2025-06",
                       "--scope", "access", "--under-14", "--guardian", "parent-1", photos["id01"][0])
    assert done.returncode == 0, done.stderr

    done = gateway_cli("list", "--config", config)
    assert done.returncode == 0, done.stderr
    listed = {p["person_id"]: p for p in json.loads(done.stdout)}
    assert set(listed) == {"id00", "kid"} and listed["id00"]["templates"] == 3
    assert listed["id00"]["consent"]["scope"] == ["access", "visits"]
    assert listed["id00"]["consent"]["notice_version"] == "2025-06"
    assert listed["kid"]["consent"]["under_14"] is True
    assert "sealed" not in done.stdout and "vector" not in done.stdout

    # The gateway had let id00 in by face, and once by card: the face decision is face-derived.
    with AccessStore(load_config(config).access_store_path) as access:
        access.append_log([("2026-11-22T08:00:00.000Z", "gate", "face", "id00", True, "granted"),
                           ("2026-11-22T08:01:00.000Z", "gate", "card", "id00", True, "granted")])
    done = gateway_cli("delete", "--config", config, "--person", "id00")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"person_id": "id00", "templates": 3, "consents": 1, "access_log_entries": 1}
    with AccessStore(load_config(config).access_store_path) as access:
        assert [e["method"] for e in access.log_entries(person_id="id00")] == ["card"]
    done = gateway_cli("identify", "--config", config, probe)
    assert [f["person_id"] for f in json.loads(done.stdout)] == [None]

    done = gateway_cli("audit", "--config", config)
    entries = json.loads(done.stdout)
    assert [(e["action"], e["person_id"]) for e in entries] == [("enrol", "id00"), ("enrol", "kid"),
                                                                ("delete", "id00")]
    assert all(e["actor"].startswith("cli:") and len(e["actor"]) > 4 for e in entries)
    done = gateway_cli("audit", "--config", config, "--verify")
    assert done.returncode == 0 and json.loads(done.stdout) == {"ok": True, "problem": None, "entries": 3}

    with _without_triggers(store_path) as conn:
        conn.execute("DELETE FROM face_audit WHERE seq = 1")
    done = gateway_cli("audit", "--config", config, "--verify")
    assert done.returncode == 1 and json.loads(done.stdout)["ok"] is False


def test_cli_refuses_when_faces_are_off_but_still_erases(tmp_path, photos):
    on = _write_config(tmp_path, enabled=True, name="on.yaml")
    off = _write_config(tmp_path, enabled=False, name="off.yaml")
    with open_face_store(load_config(on)) as store:
        store.enrol("p1", random_vectors(1), consent("p1"), MODEL, "test")
    for command in (["enroll", "--person", "p2", "--notice-version", "1", "--scope", "access", photos["id00"][0]],
                    ["identify", photos["id00"][0]]):
        done = gateway_cli(command[0], "--config", off, *command[1:])
        assert done.returncode == 1 and "switched off" in done.stderr, done.stderr
    done = gateway_cli("delete", "--config", off, "--person", "p1")  # erasure is always possible
    assert done.returncode == 0 and json.loads(done.stdout)["templates"] == 1
    assert json.loads(done.stdout)["access_log_entries"] == 0  # no access store yet: nothing to erase there


def test_cli_key_problems_are_clear(tmp_path):
    config = _write_config(tmp_path)
    with open_face_store(load_config(config)) as store:
        store.enrol("p1", random_vectors(1), consent("p1"), MODEL, "test")
    key_file = tmp_path / "var" / "faces.key"
    key = key_file.read_bytes()

    # The key from the environment instead of the file.
    done = gateway_cli("list", "--config", config, env_extra={"GATEWAY_FACES_KEY": base64.b64encode(key).decode()})
    assert done.returncode == 0 and json.loads(done.stdout)[0]["person_id"] == "p1"
    done = gateway_cli("list", "--config", config,
                       env_extra={"GATEWAY_FACES_KEY": base64.b64encode(os.urandom(32)).decode()})
    assert done.returncode == 1 and "does not open the face store" in done.stderr

    key_file.chmod(0o644)
    done = gateway_cli("list", "--config", config)
    assert done.returncode == 1 and "chmod 600" in done.stderr
    key_file.unlink()  # a lost key file: refused, never silently replaced by a new key
    done = gateway_cli("list", "--config", config)
    assert done.returncode == 1 and "key file" in done.stderr and "does not" in done.stderr
    assert not key_file.exists()
