"""The face service: the site's face store, the live gallery, the face gates and the face downlinks.

Present only while `faces.enabled` is on (face recognition is off by default, per site). It opens
the encrypted store (`store.FaceStore`), shares its gallery with every face gate through a
`GalleryHolder` (reloaded when the store's generation changes: an enrolment by command line or
downlink, a deletion), runs a `FaceGateService` worker for each door that has a `camera`, and
answers two commands from the platform:

- `faces.enroll` `{"person_id", "consent": {...}, "images": [base64 JPEG/PNG, ...]}`: the photos
  are decoded and embedded in memory, then dropped; only the encrypted templates and the consent
  record are kept. No consent record, no enrolment.
- `faces.delete` `{"person_id"}`: every template and the consent record of the person, their face
  decisions in the local access log, and the gates' memory of them (votes, cooldown) are removed;
  the deletion is audited. Works even with face recognition switched off, for a store left from
  before.

A `gateway.warning` (`faces_near_capacity`) goes up when the enrolled persons reach
`faces.warn_enrolled`, once per crossing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

from ..bus import EventBus
from ..commands import CommandError
from ..config import SiteConfigBase
from ..events import Event
from ..frames import FrameHub
from ..models import ModelError, models_dir
from .face_models import FaceModels
from .gallery import MatchPolicy
from .gate_service import FaceGateService, GalleryHolder, GateSpec

if TYPE_CHECKING:
    from ..access.service import AccessService
    from .store import FaceStore

log = logging.getLogger("gateway.faces")

GALLERY_CAPACITY = 100_000  # the in-memory search is sized (and benchmarked) for this many members
MAX_ENROL_IMAGES = 10
ACCESS_PURPOSE = "access"  # persons whose consent covers door access are in the gates' gallery
POINTS_PURPOSE = "points"  # ... and those whose consent covers points are recognised at tills
PLATFORM_ACTOR = "platform"


def match_policy(config: SiteConfigBase) -> MatchPolicy:
    match = config.faces.match
    return MatchPolicy(threshold=match.threshold, margin=match.margin, unknown_band=match.unknown_band,
                       min_face_px=match.min_face_px, confirm_n=match.confirm_n, confirm_m=match.confirm_m,
                       cooldown_s=match.cooldown)


def gate_specs(config: SiteConfigBase) -> list[GateSpec]:
    if not config.faces.enabled:
        return []
    policy = match_policy(config)
    return [GateSpec(door.id, door.camera, policy, config.faces.gate_fps)
            for door in config.access.doors if door.camera is not None]


def till_specs(config: SiteConfigBase) -> list[GateSpec]:
    """Till cameras (`pos.till_cameras`): a recognised member is credited with the till's next sale."""
    if not config.faces.enabled:
        return []
    policy = match_policy(config)
    return [GateSpec(f"till:{till}", camera, policy, config.faces.gate_fps, till=till)
            for till, camera in config.pos.till_cameras.items()]


class FaceService:
    def __init__(self, bus: EventBus, frames: FrameHub, config: SiteConfigBase, gateway_id: str,
                 access: AccessService | None = None):
        self.bus = bus
        self.frames = frames
        self.config = config
        self.gateway_id = gateway_id
        self.access = access
        self.store: FaceStore | None = None
        self.gates: FaceGateService | None = None
        self.till_gates: FaceGateService | None = None
        # The face models, loaded once for the door gates, the till gates and enrolment.
        self.models = FaceModels(models_dir(config.models.dir), config.models.threads)
        self._warned = False

    # --------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Open the store and start the gates (blocking: call off the event loop)."""
        from .store import open_face_store

        config = self.config
        if not config.faces.enabled and not config.faces_store_path.exists():
            return  # face recognition off and never on: not even an empty store is created
        self.store = open_face_store(config)
        if not config.faces.enabled:
            log.info("face recognition is off at this site; the face store is open only for faces.delete")
            return
        store, embedder = self.store, config.faces.embedder
        holder = GalleryHolder(lambda: store.load_gallery(embedder, purpose=ACCESS_PURPOSE), store.generation)
        self.gates = FaceGateService(self.bus, self.frames, self.models.directory, config.models.threads,
                                     holder, embedder_name=embedder, models=self.models)
        self.gates.apply(gate_specs(config))
        # Tills have a gallery of their own: the members whose consent covers points.
        tills = GalleryHolder(lambda: store.load_gallery(embedder, purpose=POINTS_PURPOSE), store.generation)
        self.till_gates = FaceGateService(self.bus, self.frames, self.models.directory, config.models.threads,
                                          tills, embedder_name=embedder, models=self.models)
        self.till_gates.apply(till_specs(config))
        self._check_capacity()

    def reconfigure(self, config: SiteConfigBase, actor: str = "config-reload") -> None:
        """A reload: new gates and thresholds apply at once; a threshold change is audited."""
        old, self.config = self.config, config
        if self.store is not None and old.faces.match != config.faces.match:
            self.store.record_threshold_change(old.faces.match.model_dump(), config.faces.match.model_dump(), actor)
        if self.gates is not None:
            self.gates.apply(gate_specs(config))
        if self.till_gates is not None:
            self.till_gates.apply(till_specs(config))

    def stop(self) -> None:
        for gates in (self.gates, self.till_gates):
            if gates is not None:
                gates.stop()
        if self.store is not None:
            self.store.close()

    def status(self) -> dict[str, Any]:
        store = self.store
        return {"enabled": self.config.faces.enabled,
                "enrolled": store.count_persons() if store is not None else 0,
                "gates": [g for gates in (self.gates, self.till_gates) if gates is not None for g in gates.status()]}

    # ----------------------------------------------------------------------------- commands

    async def enroll_command(self, args: dict) -> dict:
        if not self.config.faces.enabled or self.store is None:
            raise CommandError("face recognition is off at this site (faces.enabled: false)")
        person_id, images = args.get("person_id"), args.get("images")
        if not isinstance(person_id, str) or not person_id:
            raise CommandError("faces.enroll needs a person_id (string)")
        if not isinstance(images, list) or not 1 <= len(images) <= MAX_ENROL_IMAGES:
            raise CommandError(f"faces.enroll needs images: a list of 1 to {MAX_ENROL_IMAGES} base64 photos")
        try:
            photos = [base64.b64decode(image, validate=True) for image in images]
        except (binascii.Error, TypeError, ValueError):
            raise CommandError("faces.enroll: images must be base64 strings") from None
        try:
            added, enrolled = await asyncio.to_thread(self._enrol, person_id, photos, args.get("consent"))
        except (ValueError, ModelError) as exc:  # ConsentError and EnrolError are ValueErrors
            raise CommandError(f"faces.enroll refused: {exc}") from None
        finally:
            photos.clear()  # the pictures are not kept a moment longer than the embedding
        self._check_capacity(enrolled)
        return {"person_id": person_id, "templates": added, "enrolled": enrolled}

    def _enrol(self, person_id: str, photos: list[bytes], consent: Any) -> tuple[int, int]:
        """(templates added, persons now enrolled), in a worker thread."""
        from .enrol import embed_images
        from .store import parse_consent

        parse_consent(consent, person_id)  # refuse before spending time on the photos
        detector, embedder = self._enrolment_models()
        vectors = embed_images(photos, detector, embedder, self.config.faces.match.min_face_px)
        added = self.store.enrol(person_id, vectors, consent, self.config.faces.embedder, PLATFORM_ACTOR)
        for gates in (self.gates, self.till_gates):
            if gates is not None:
                gates.gallery.invalidate()
        return added, self.store.count_persons()

    def _enrolment_models(self) -> tuple[Any, Any]:
        # Enrolment runs its models with one thread (models.threads is for the gates): with the
        # default models.threads of 1 these are the gates' own sessions.
        return self.models.pair(self.config.faces.embedder, threads=1)

    async def delete_command(self, args: dict) -> dict:
        person_id = args.get("person_id")
        if not isinstance(person_id, str) or not person_id:
            raise CommandError("faces.delete needs a person_id (string)")
        return await self.delete_person(person_id, PLATFORM_ACTOR)

    async def delete_person(self, person_id: str, actor: str) -> dict:
        """Every face-derived record of a person, gone: templates, consent, face decisions, gate memory."""
        result = {"person_id": person_id, "templates": 0, "consents": 0}
        if self.store is not None:
            result = await asyncio.to_thread(self.store.delete_person, person_id, actor)
        for gates in (self.gates, self.till_gates):
            if gates is not None:
                gates.forget_person(person_id)
        if self.access is not None:
            result["access_log_entries"] = await self.access.forget_face_records(person_id)
        return result

    # ----------------------------------------------------------------------------- capacity

    def _check_capacity(self, enrolled: int | None = None) -> None:
        """Warn when the enrolled persons (counted here unless `enrolled` is given) reach warn_enrolled."""
        if self.store is None:
            return
        if enrolled is None:
            enrolled = self.store.count_persons()
        warn_at = self.config.faces.warn_enrolled
        if enrolled >= warn_at and not self._warned:
            log.warning("%d persons enrolled for face recognition: near the gallery's capacity of %d",
                        enrolled, GALLERY_CAPACITY)
            try:
                self.bus.publish(Event("gateway.warning", self.gateway_id, {
                    "warning": "faces_near_capacity", "enrolled": enrolled, "warn_at": warn_at,
                    "capacity": GALLERY_CAPACITY}))
            except RuntimeError:
                pass  # the bus is not running (start-up order) or has stopped
        self._warned = enrolled >= warn_at
