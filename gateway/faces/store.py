"""The gateway's own face store: encrypted templates, consent records and an append-only audit log.

Face templates are biometric data: "sensitive personal information" under China's PIPL (art. 28),
covered by the 2025 Security Management Measures for the Application of Face Recognition
Technology, and "special category" data under the GDPR (art. 9). The store is built so that the
rules hold by construction rather than by care:

- **Consent first.** A person is enrolled only with a consent record (`Consent`): the purposes
  (`scope`), the version of the notice they were shown, when and how they agreed, and for a child
  under 14 the guardian's consent (PIPL art. 31). No record, no templates (`ConsentError`).
- **Encrypted at rest.** Every template vector is sealed with AES-256-GCM (the `cryptography`
  package): a fresh random 96-bit nonce per row, and the row's person id and model as associated
  data, so a row copied onto another person or model no longer decrypts. The file holds nonces and
  ciphertexts only; nothing in it reveals a vector. A key check value in the file makes opening
  with the wrong key fail at once (`FaceStoreKeyError`) instead of later, row by row.
- **Erasure really erases.** `delete_person` removes the templates and the consent record in one
  transaction, with SQLite's `secure_delete` on (freed pages are zeroed) and the WAL checkpointed
  and truncated afterwards, so no old page keeps them.
- **Accountability.** Every enrolment, deletion, consent change and threshold change is written to
  an audit log in the same transaction as the change. The log is append-only (triggers refuse any
  UPDATE or DELETE) and hash-chained (each row's sha256 covers the previous row's hash), and the
  head of the chain is kept with an HMAC under a key derived from the store's key, so an edited,
  removed or truncated row is found by `verify_audit`. The log never holds a template or a picture.
- **Pictures are never stored** (see gateway.faces.enrol): only vectors reach this module.

A `generation` counter in the file is bumped in the same transaction as every change, so a running
gateway notices an enrolment made by the command line with one cheap query (`generation()`) and
reloads its gallery.

Key management: `load_or_create_key` keeps the 32-byte key in a file of its own (mode 0600, created
atomically, refused if others may read it); `key_from_text` takes one given as base64 (an
environment variable, a secret manager). Losing the key loses the templates (re-enrol); that is
the point.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlite_utils
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import (
    AwareDatetime,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..sqlite import SQLiteStore
from ..validation import StrictModel

if TYPE_CHECKING:
    from ..config import SiteConfigBase
    from .gallery import FaceGallery

log = logging.getLogger(__name__)

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96-bit GCM nonce, random per row
KEY_ENV = "GATEWAY_FACES_KEY"  # a base64 key in the environment takes the place of the key file
SCHEMA_VERSION = "1"
GENESIS_HASH = "0" * 64
MAX_TEMPLATES_PER_PERSON = 20  # a handful of angles is enough; more is data kept for nothing
CLOCK_SKEW = timedelta(minutes=5)  # consent "given" this far in the future is accepted (clock drift)
_KEY_CHECK_PLAINTEXT = b"gateway.faces key check v1"
_KEY_CHECK_AAD = b"gateway.faces/key-check"
_TEMPLATE_AAD = b"gateway.faces/template/v1"
_PERSON_ID = r"^[^\x00-\x1f\x7f]{1,128}$"
_WORD = r"^[a-z][a-z0-9_-]{0,31}$"
AUDIT_ACTIONS = ("enrol", "delete", "threshold_change", "consent")


class FaceStoreError(Exception):
    """The face store cannot do what was asked (a damaged file, a template that no longer decrypts)."""


class FaceStoreKeyError(FaceStoreError):
    """No usable key: the wrong key for this store, or a key file of the wrong size or permissions."""


class ConsentError(ValueError):
    """Enrolment refused: no consent record, or one that does not hold (e.g. a child without a guardian)."""


# --------------------------------------------------------------------------------------- consent


class GuardianConsent(StrictModel):
    """A parent's or guardian's consent for a child under 14 (PIPL art. 31)."""

    guardian_id: str = Field(..., min_length=1, max_length=128, description="the guardian, as the platform knows them")
    given_at: AwareDatetime


class Consent(StrictModel):
    """A person's consent to face recognition: what for, which notice they saw, when and how."""

    person_id: str = Field(..., pattern=_PERSON_ID)
    scope: list[str] = Field(..., min_length=1, description="purposes, e.g. [\"access\"] or [\"access\", \"visits\"]")
    notice_version: str = Field(..., min_length=1, max_length=64, description="the privacy notice the person was shown")
    given_at: AwareDatetime
    under_14: bool = False
    guardian: GuardianConsent | None = None
    method: str = Field(..., pattern=_WORD, description="how consent was collected: app, paper, kiosk, ...")

    @field_validator("scope")
    @classmethod
    def _scope_words(cls, scope: list[str]) -> list[str]:
        bad = [s for s in scope if not re.match(_WORD, s)]
        if bad:
            raise ValueError(f"purposes are lower-case words such as access, visits, points; not {bad}")
        if len(set(scope)) != len(scope):
            raise ValueError("a purpose is listed twice")
        return scope

    @model_validator(mode="after")
    def _holds(self) -> "Consent":
        if self.under_14 and self.guardian is None:
            raise ValueError("a child under 14 needs the consent of a parent or guardian "
                             "(guardian: {guardian_id, given_at}) (PIPL art. 31)")
        latest = datetime.now(timezone.utc) + CLOCK_SKEW
        if self.given_at > latest:
            raise ValueError(f"consent given_at {self.given_at.isoformat()} is in the future")
        if self.guardian is not None and self.guardian.given_at > latest:
            raise ValueError(f"guardian consent given_at {self.guardian.given_at.isoformat()} is in the future")
        return self


def parse_consent(data: Consent | dict | None, person_id: str | None = None) -> Consent:
    """A validated consent record (from a Consent or a dict), or ConsentError saying why not."""
    if data is None:
        raise ConsentError(f"no consent record for {person_id!r}: face enrolment needs the person's "
                           "consent (scope, notice version, when, how; a guardian's for a child under 14)")
    if not isinstance(data, Consent):
        try:
            data = Consent.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'consent'}: {e['msg']}"
                                 for e in exc.errors()[:5])
            raise ConsentError(f"consent record refused: {problems}") from None
    if person_id is not None and data.person_id != person_id:
        raise ConsentError(f"the consent record is for {data.person_id!r}, not {person_id!r}")
    return data


# ------------------------------------------------------------------------------------------ keys


def key_from_text(text: str) -> bytes:
    """A 32-byte key from its base64 text (standard or URL-safe alphabet), e.g. an environment variable."""
    cleaned = "".join(str(text).split())
    try:
        key = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise FaceStoreKeyError("the face store key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise FaceStoreKeyError(f"the face store key must be {KEY_BYTES} bytes (base64 of 32 random bytes), "
                                f"this one is {len(key)}")
    return key


def _read_key_file(path: Path) -> bytes:
    info = path.stat()
    if info.st_mode & 0o077:
        raise FaceStoreKeyError(f"key file {path} may be read or written by other users (mode "
                                f"{info.st_mode & 0o777:04o}); it must be 0600: chmod 600 {path}")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise FaceStoreKeyError(f"key file {path} holds {len(key)} bytes, not the {KEY_BYTES} of a face store key")
    return key


def load_or_create_key(path: str | Path) -> bytes:
    """The 32-byte key in `path`, created (random, mode 0600, atomically) if there is none.

    Refuses a file others may read or write, or one of the wrong size, with a message that says so.
    Two processes creating it at once end up with the same key: the file is written aside and
    hard-linked into place, which fails if the other one got there first.
    """
    path = Path(path)
    if path.exists():
        return _read_key_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return _read_key_file(path)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ the store


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _row_hash(prev_hash: str, seq: int, at: str, action: str, person_id: str | None, actor: str,
              detail: str) -> str:
    content = _canonical({"seq": seq, "at": at, "action": action, "person_id": person_id, "actor": actor,
                          "detail": detail})
    return hashlib.sha256(prev_hash.encode("ascii") + content).hexdigest()


def _template_aad(person_id: str, model: str) -> bytes:
    """Associated data binding a template to its person and model (length-prefixed: unambiguous)."""
    person, name = person_id.encode("utf-8"), model.encode("utf-8")
    return b"%s\x00%d:%s%d:%s" % (_TEMPLATE_AAD, len(person), person, len(name), name)


class FaceStore(SQLiteStore):
    """Encrypted face templates, consent records and the audit log in one SQLite file (WAL).

    Thread-safe: one connection, one lock (`SQLiteStore`). Other processes (the command line while
    the gateway runs) may use the same file at the same time; SQLite serialises the writers. Unlike
    other stores it refuses `synchronous: off`, zeroes freed pages, and refuses use once closed.
    """

    def __init__(self, path: str | Path, key: bytes, synchronous: str = "full"):
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise FaceStoreKeyError(f"the face store key must be {KEY_BYTES} bytes")
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be normal, full or extra, got {synchronous!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._aead = AESGCM(bytes(key))
        self._mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                             info=b"gateway.faces/audit-head").derive(bytes(key))
        super().__init__(path, synchronous)
        conn = self._conn
        try:
            conn.execute("PRAGMA secure_delete=ON")  # freed pages are zeroed: erased data is gone
            self._db = sqlite_utils.Database(conn)
            self._closed = False
            self._create_schema()
            with self._transaction():
                if self._meta("schema_version") is None:
                    self._set_meta("schema_version", SCHEMA_VERSION)
                    self._set_meta("generation", "0")
                self._check_key()
        except BaseException:
            conn.close()
            raise

    # ------------------------------------------------------------------------------- plumbing

    def _create_schema(self) -> None:
        db = self._db
        db["face_meta"].create({"name": str, "value": str}, pk="name", if_not_exists=True)
        db["face_templates"].create(
            {"id": int, "person_id": str, "template_no": int, "model": str, "dim": int, "sealed": bytes,
             "enrolled_at": str},
            pk="id", not_null={"person_id", "template_no", "model", "dim", "sealed", "enrolled_at"},
            if_not_exists=True)
        db["face_templates"].create_index(["person_id", "model", "template_no"], unique=True, if_not_exists=True)
        db["face_templates"].create_index(["model"], if_not_exists=True)
        db["face_consents"].create({"person_id": str, "body": str, "recorded_at": str}, pk="person_id",
                                   not_null={"body", "recorded_at"}, if_not_exists=True)
        db["face_audit"].create(
            {"seq": int, "at": str, "action": str, "person_id": str, "actor": str, "detail": str,
             "prev_hash": str, "hash": str},
            pk="seq", not_null={"at", "action", "actor", "detail", "prev_hash", "hash"}, if_not_exists=True)
        self._conn.execute("CREATE TRIGGER IF NOT EXISTS face_audit_no_update BEFORE UPDATE ON face_audit "
                           "BEGIN SELECT RAISE(ABORT, 'the face audit log is append-only: no UPDATE'); END")
        self._conn.execute("CREATE TRIGGER IF NOT EXISTS face_audit_no_delete BEFORE DELETE ON face_audit "
                           "BEGIN SELECT RAISE(ABORT, 'the face audit log is append-only: no DELETE'); END")

    def _check_key(self) -> None:
        check = self._meta("key_check")
        if check is None:
            nonce = os.urandom(NONCE_BYTES)
            sealed = nonce + self._aead.encrypt(nonce, _KEY_CHECK_PLAINTEXT, _KEY_CHECK_AAD)
            self._set_meta("key_check", sealed.hex())
            return
        try:
            sealed = bytes.fromhex(check)
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _KEY_CHECK_AAD)
        except (InvalidTag, ValueError):
            plain = None
        if plain != _KEY_CHECK_PLAINTEXT:
            raise FaceStoreKeyError(f"the key does not open the face store {self.path}: it was created with "
                                    "another key (check faces.key_file or $" + KEY_ENV + ")")

    def _meta(self, name: str) -> str | None:
        row = self._conn.execute("SELECT value FROM face_meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, name: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO face_meta (name, value) VALUES (?, ?)", (name, value))

    @contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error): a change and its audit row together.

        Unlike `SQLiteStore._writing`, it does not take the lock: its callers hold it already (to
        check that the store is open, and `delete_person` to checkpoint after the commit)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _bump_generation(self) -> int:
        generation = int(self._meta("generation") or 0) + 1
        self._set_meta("generation", str(generation))
        return generation

    def _audit(self, action: str, person_id: str | None, actor: str, detail: dict) -> None:
        """Append one audit row, chained to the last one, and move the MAC'd head (same transaction)."""
        if action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        if not actor or not isinstance(actor, str):
            raise ValueError("every change needs an actor (who did it), e.g. cli:alice")
        last = self._conn.execute("SELECT seq, hash FROM face_audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        at = _now()
        detail_text = _canonical(detail).decode("utf-8")
        digest = _row_hash(prev_hash, seq, at, action, person_id, actor, detail_text)
        self._conn.execute("INSERT INTO face_audit (seq, at, action, person_id, actor, detail, prev_hash, hash) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (seq, at, action, person_id, actor, detail_text, prev_hash, digest))
        self._set_meta("audit_head", self._head_text(seq, digest))

    def _head_text(self, seq: int, digest: str) -> str:
        mac = hmac.new(self._mac_key, f"{seq}:{digest}".encode("ascii"), hashlib.sha256).hexdigest()
        return json.dumps({"seq": seq, "hash": digest, "mac": mac})

    def _seal(self, person_id: str, model: str, vector: np.ndarray) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        plain = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        return nonce + self._aead.encrypt(nonce, plain, _template_aad(person_id, model))

    def _open(self, person_id: str, model: str, dim: int, sealed: bytes) -> np.ndarray:
        try:
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _template_aad(person_id, model))
        except InvalidTag:
            raise FaceStoreError(f"a template of {person_id!r} ({model}) does not decrypt: the row was altered "
                                 "or moved from another person; delete and re-enrol that person") from None
        vector = np.frombuffer(plain, dtype="<f4").astype(np.float32)
        if vector.shape != (dim,):
            raise FaceStoreError(f"a template of {person_id!r} ({model}) has {vector.size} values, not {dim}")
        return vector

    def _ensure_open(self) -> None:
        if self._closed:
            raise FaceStoreError(f"the face store {self.path} is closed")

    _check_open = _ensure_open  # SQLiteStore's transactions check under the lock, as before

    # -------------------------------------------------------------------------------- changes

    def enrol(self, person_id: str, vectors: np.ndarray, consent: Consent | dict | None, model: str,
              actor: str) -> int:
        """Add a person's templates ([N, D] or [D]) under a consent record, which replaces any earlier
        one; returns how many templates were added. Refused (ConsentError) without a valid consent."""
        consent = parse_consent(consent, person_id)
        if not model or not isinstance(model, str):
            raise ValueError("the embedding model's name is needed (templates of one model do not match another's)")
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim == 1:
            vectors = vectors[np.newaxis]
        if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
            raise ValueError(f"vectors must be [N, D] with N >= 1, got shape {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("vectors must be finite")
        norms = np.linalg.norm(vectors, axis=1)
        if np.any(norms < 1e-6):
            raise ValueError("a template vector is all zeros")
        vectors = vectors / norms[:, np.newaxis]
        dim = int(vectors.shape[1])
        with self._lock:
            self._ensure_open()
            with self._transaction():
                # Every template of a model has its dimension (enforced here), so one row tells.
                other_dim = self._conn.execute("SELECT dim FROM face_templates WHERE model = ? LIMIT 1",
                                               (model,)).fetchone()
                if other_dim and other_dim[0] != dim:
                    raise ValueError(f"the store holds {other_dim[0]}-d templates of model {model}, "
                                     f"these are {dim}-d")
                held, last_no = self._conn.execute(
                    "SELECT count(*), coalesce(max(template_no), 0) FROM face_templates WHERE person_id = ?",
                    (person_id,)).fetchone()
                if held + len(vectors) > MAX_TEMPLATES_PER_PERSON:
                    raise ValueError(f"{person_id!r} would have {held + len(vectors)} templates; at most "
                                     f"{MAX_TEMPLATES_PER_PERSON} are kept (delete the person and enrol afresh)")
                at = _now()
                self._conn.executemany(
                    "INSERT INTO face_templates (person_id, template_no, model, dim, sealed, enrolled_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(person_id, last_no + 1 + i, model, dim, self._seal(person_id, model, v), at)
                     for i, v in enumerate(vectors)])
                self._conn.execute("INSERT OR REPLACE INTO face_consents (person_id, body, recorded_at) "
                                   "VALUES (?, ?, ?)", (person_id, consent.model_dump_json(), at))
                self._audit("enrol", person_id, actor, {
                    "templates": len(vectors), "model": model, "notice_version": consent.notice_version,
                    "scope": consent.scope, "method": consent.method, "under_14": consent.under_14})
                self._bump_generation()
        log.info("enrolled %d face template(s) of %s (%s) by %s", len(vectors), person_id, model, actor)
        return len(vectors)

    def record_consent(self, consent: Consent | dict, actor: str) -> None:
        """Replace the consent record of an enrolled person (a narrower scope, a new notice version).
        Withdrawing consent altogether is `delete_person`."""
        consent = parse_consent(consent)
        with self._lock:
            self._ensure_open()
            with self._transaction():
                held = self._conn.execute("SELECT count(*) FROM face_templates WHERE person_id = ?",
                                          (consent.person_id,)).fetchone()[0]
                if not held:
                    raise ConsentError(f"{consent.person_id!r} is not enrolled; enrol them with this consent")
                self._conn.execute("INSERT OR REPLACE INTO face_consents (person_id, body, recorded_at) "
                                   "VALUES (?, ?, ?)", (consent.person_id, consent.model_dump_json(), _now()))
                self._audit("consent", consent.person_id, actor, {
                    "notice_version": consent.notice_version, "scope": consent.scope, "method": consent.method,
                    "under_14": consent.under_14})
                self._bump_generation()

    def delete_person(self, person_id: str, actor: str) -> dict:
        """Erase a person's templates and consent record; `{"person_id", "templates", "consents"}` removed.

        An unknown person is not an error (the request is audited all the same). The WAL is
        checkpointed and truncated afterwards, so the old pages do not linger in it.
        """
        with self._lock:
            self._ensure_open()
            with self._transaction():
                templates = self._conn.execute("DELETE FROM face_templates WHERE person_id = ?",
                                               (person_id,)).rowcount
                consents = self._conn.execute("DELETE FROM face_consents WHERE person_id = ?",
                                              (person_id,)).rowcount
                self._audit("delete", person_id, actor, {"templates": templates, "consents": consents})
                self._bump_generation()
            self._checkpoint()
        log.info("deleted %d face template(s) and %d consent record(s) of %s by %s",
                 templates, consents, person_id, actor)
        return {"person_id": person_id, "templates": templates, "consents": consents}

    def _checkpoint(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # a reader elsewhere holds the WAL: it is truncated by a later checkpoint
            log.warning("face store checkpoint after erasure postponed: %s", exc)

    def record_threshold_change(self, old: Any, new: Any, actor: str) -> None:
        """Audit a change of the match threshold (or policy: pass dicts)."""
        with self._lock:
            self._ensure_open()
            with self._transaction():
                self._audit("threshold_change", None, actor, {"old": old, "new": new})
                self._bump_generation()

    # -------------------------------------------------------------------------------- reading

    def load_gallery(self, model: str, purpose: str | None = None) -> "FaceGallery":
        """Every template of `model`, decrypted, in a FaceGallery (person ids as enrolled).

        With `purpose`, only persons whose consent scope includes it (purpose limitation: a
        person who agreed to "visits" only is not recognised at a door). Templates of other models
        are skipped with a warning: those persons need re-enrolment with this model.
        """
        from .gallery import FaceGallery

        with self._reading() as conn:
            rows = conn.execute(
                "SELECT t.person_id, t.model, t.dim, t.sealed, c.body FROM face_templates t "
                "LEFT JOIN face_consents c ON c.person_id = t.person_id "
                "ORDER BY t.person_id, t.model, t.template_no").fetchall()
        other_models: dict[str, set[str]] = {}
        skipped_purpose, no_consent = set(), set()
        covered: dict[str, bool] = {}  # person -> consent covers the purpose (parsed once per person)
        persons, vectors = [], []
        for person_id, row_model, dim, sealed, consent_body in rows:
            if row_model != model:
                other_models.setdefault(row_model, set()).add(person_id)
                continue
            if consent_body is None:
                no_consent.add(person_id)
                continue
            if purpose is not None:
                if person_id not in covered:
                    covered[person_id] = purpose in json.loads(consent_body).get("scope", [])
                if not covered[person_id]:
                    skipped_purpose.add(person_id)
                    continue
            persons.append(person_id)
            vectors.append(self._open(person_id, row_model, dim, sealed))
        gallery = FaceGallery(dim=len(vectors[0]) if vectors else None, chunk=max(1024, len(vectors)))
        # Rows come grouped by person: one add per person.
        start = 0
        for end in range(1, len(persons) + 1):
            if end == len(persons) or persons[end] != persons[start]:
                gallery.add(persons[start], np.stack(vectors[start:end]))
                start = end
        for other, persons in other_models.items():
            stranded = persons - set(gallery.persons())
            log.warning("face store: %d person(s) have templates of model %s, not %s; they need re-enrolment "
                        "with %s%s", len(persons), other, model, model,
                        f" ({len(stranded)} have none of {model})" if stranded else "")
        if no_consent:
            log.warning("face store: %d person(s) have templates but no consent record; not loaded", len(no_consent))
        if skipped_purpose:
            log.info("face store: %d person(s) not loaded: their consent does not cover %r",
                     len(skipped_purpose), purpose)
        return gallery

    def persons(self) -> list[str]:
        """Enrolled persons (with at least one template), sorted."""
        with self._lock:
            self._ensure_open()
            return [p for (p,) in self._conn.execute(
                "SELECT DISTINCT person_id FROM face_templates ORDER BY person_id")]

    def person_summaries(self) -> list[dict]:
        """Per person: template counts by model and the consent's notice version, scope, given_at,
        method, under_14. Never a vector."""
        with self._lock:
            self._ensure_open()
            counts = self._conn.execute("SELECT person_id, model, count(*), min(enrolled_at), max(enrolled_at) "
                                        "FROM face_templates GROUP BY person_id, model ORDER BY person_id").fetchall()
            consents = dict(self._conn.execute("SELECT person_id, body FROM face_consents").fetchall())
        summaries: dict[str, dict] = {}
        for person_id, model, count, first, last in counts:
            entry = summaries.setdefault(person_id, {"person_id": person_id, "templates": 0, "models": {},
                                                     "enrolled_at": first, "consent": None})
            entry["templates"] += count
            entry["models"][model] = count
            entry["enrolled_at"] = min(entry["enrolled_at"], first)
        for person_id in set(consents) - set(summaries):
            summaries[person_id] = {"person_id": person_id, "templates": 0, "models": {}, "enrolled_at": None,
                                    "consent": None}
        for person_id, body in consents.items():
            consent = Consent.model_validate_json(body)
            summaries[person_id]["consent"] = {
                "notice_version": consent.notice_version, "scope": consent.scope,
                "given_at": consent.given_at.isoformat(), "method": consent.method, "under_14": consent.under_14}
        return [summaries[p] for p in sorted(summaries)]

    def count_persons(self) -> int:
        with self._lock:
            self._ensure_open()
            return self._conn.execute("SELECT count(DISTINCT person_id) FROM face_templates").fetchone()[0]

    def count_templates(self, model: str | None = None) -> int:
        with self._lock:
            self._ensure_open()
            if model is None:
                return self._conn.execute("SELECT count(*) FROM face_templates").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM face_templates WHERE model = ?", (model,)).fetchone()[0]

    def consent(self, person_id: str) -> Consent | None:
        with self._lock:
            self._ensure_open()
            row = self._conn.execute("SELECT body FROM face_consents WHERE person_id = ?", (person_id,)).fetchone()
        return Consent.model_validate_json(row[0]) if row else None

    def generation(self) -> int:
        """A number that changes with every change to the store, from any process (one cheap query)."""
        with self._lock:
            self._ensure_open()
            return int(self._meta("generation") or 0)

    def audit_entries(self, limit: int | None = None) -> list[dict]:
        """Audit rows in order (the last `limit` of them), detail parsed."""
        with self._lock:
            self._ensure_open()
            if limit is None:
                rows = self._conn.execute("SELECT seq, at, action, person_id, actor, detail, prev_hash, hash "
                                          "FROM face_audit ORDER BY seq").fetchall()
            else:
                rows = self._conn.execute("SELECT * FROM (SELECT seq, at, action, person_id, actor, detail, "
                                          "prev_hash, hash FROM face_audit ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                                          (max(0, int(limit)),)).fetchall()
        return [{"seq": seq, "at": at, "action": action, "person_id": person_id, "actor": actor,
                 "detail": json.loads(detail), "prev_hash": prev_hash, "hash": digest}
                for seq, at, action, person_id, actor, detail, prev_hash, digest in rows]

    def count_audit_entries(self) -> int:
        """How many rows the audit log holds (without reading them)."""
        with self._lock:
            self._ensure_open()
            return self._conn.execute("SELECT count(*) FROM face_audit").fetchone()[0]

    def verify_audit(self) -> tuple[bool, str | None]:
        """(True, None) if the audit log is whole; else (False, what is wrong and where).

        Checks that seqs run 1, 2, 3 ... without a gap, that each row names the previous row's
        hash, that each row's hash matches its content, and that the last row is the head recorded
        (with an HMAC under the store's key) by the last change, so a truncated log is found too.
        """
        with self._reading() as conn:
            rows = conn.execute("SELECT seq, at, action, person_id, actor, detail, prev_hash, hash "
                                "FROM face_audit ORDER BY seq").fetchall()
            head = self._meta("audit_head")
        expected_seq, prev = 1, GENESIS_HASH
        for seq, at, action, person_id, actor, detail, prev_hash, digest in rows:
            if seq != expected_seq:
                return False, f"audit row {expected_seq} is missing (the next row is {seq})"
            if prev_hash != prev:
                return False, f"audit row {seq} does not follow row {seq - 1}: the chain is broken"
            if action not in AUDIT_ACTIONS or digest != _row_hash(prev_hash, seq, at, action, person_id, actor,
                                                                  detail):
                return False, f"audit row {seq} was altered: its hash does not match its content"
            expected_seq, prev = seq + 1, digest
        if head is None:
            return (True, None) if not rows else (False, "the audit head is missing from the store")
        try:
            recorded = json.loads(head)
            mac = hmac.new(self._mac_key, f"{recorded['seq']}:{recorded['hash']}".encode("ascii"),
                           hashlib.sha256).hexdigest()
        except (ValueError, KeyError, TypeError):
            return False, "the audit head is unreadable"
        if not hmac.compare_digest(mac, str(recorded.get("mac", ""))):
            return False, "the audit head was altered (its MAC does not match)"
        if recorded["seq"] != expected_seq - 1 or recorded["hash"] != prev:
            return False, (f"the audit log ends at row {expected_seq - 1} but the last change recorded row "
                           f"{recorded['seq']}: rows were removed or replaced")
        return True, None

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


# ------------------------------------------------------------------------------- from a config


def resolve_key(key_file: Path, store_path: Path, env: dict[str, str] | None = None) -> bytes:
    """The store's key: $GATEWAY_FACES_KEY (base64), else the key file (created on first use, but
    never beside an existing store: a new key could not open it)."""
    env = os.environ if env is None else env
    text = env.get(KEY_ENV)
    if text:
        return key_from_text(text)
    key_file = Path(key_file)
    if not key_file.exists() and store_path.exists() and store_path.stat().st_size > 0:
        raise FaceStoreKeyError(f"the face store {store_path} exists but its key file {key_file} does not; "
                                f"restore the key file (or set ${KEY_ENV}) — a new key cannot open it")
    return load_or_create_key(key_file)


def open_face_store(config: SiteConfigBase, env: dict[str, str] | None = None) -> FaceStore:
    """The site's face store, from its config (store path, key) — for the gateway and the command line."""
    store_path = config.faces_store_path
    key = resolve_key(config.faces_key_path, store_path, env)
    return FaceStore(store_path, key, synchronous=config.storage.synchronous)
