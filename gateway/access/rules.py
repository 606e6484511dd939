"""The access decision: who may pass which door when, decided on the spot from the last synced set.

Everything here is in memory and pure except the anti-passback state, which `record_passage`
updates. `AccessPolicy` indexes the set once (credential value -> credential, person id -> person,
door -> rules by person and by group), so `decide` costs a few dict lookups and a look at the
rules of that one door for that person's groups, whatever the number of credentials.

Conventions:
- Credential values are unique across kinds (a card's canonical Wiegand value such as
  `h10301:12:3456`, a PIN, a QR token, a face-match id); a credential only opens with its own
  method, so a PIN typed as a QR code is an unknown credential.
- Person and credential validity are instants (aware datetimes, `valid_until` exclusive); a door
  rule's `valid_from` / `valid_until` are dates in the site's time zone, both inclusive, checked
  against the local date of the attempt.
- Weekly windows are in the site's local wall-clock time: `{"day": "fri", "start": "22:00",
  "end": "02:00"}` is Friday 22:00 to Saturday 02:00 (an end before the start crosses midnight;
  `24:00` is the end of the day; the end is exclusive).
- A face match alone opens a door only where a rule lists `face` in its `methods`: a face is a
  weaker and more intrusive factor than a card, so it is opt-in per rule.
- Anti-passback covers a pair of doors: once a person has passed the entry door, they must pass the
  exit door before the entry door opens for them again (`hard`: refused, `soft`: granted and
  flagged). A person never seen is free to enter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, ConfigDict, Field, field_validator, model_validator

from ..validation import StrictModel

CredentialKind = Literal["card", "pin", "qr", "face"]
DEFAULT_METHODS: frozenset[str] = frozenset({"card", "pin", "qr"})
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
DAY_SECONDS = 86400
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)(?::([0-5]\d))?$")
_ID = Field(min_length=1, max_length=128)


class Reason(StrEnum):
    GRANTED = "granted"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    CREDENTIAL_NOT_YET_VALID = "credential_not_yet_valid"
    CREDENTIAL_EXPIRED = "credential_expired"
    PERSON_NOT_YET_VALID = "person_not_yet_valid"
    PERSON_EXPIRED = "person_expired"
    NO_RULE_FOR_DOOR = "no_rule_for_door"
    FACE_ONLY_NOT_ALLOWED = "face_only_not_allowed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    OUTSIDE_VALID_DATES = "outside_valid_dates"
    OUTSIDE_TIME_WINDOW = "outside_time_window"
    ANTI_PASSBACK = "anti_passback"
    # Decided by the access service, not the rules: the person may pass but the door's reader
    # could not be told to open (its device is not running or refused the command).
    DOOR_UNAVAILABLE = "door_unavailable"


class _Frozen(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_validity(valid_from, valid_until):
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise ValueError("valid_until must be after valid_from")


class Person(_Frozen):
    """Someone who may be granted access; `person_id` is pseudonymous (no name on the gateway)."""

    person_id: str = _ID
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    groups: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _ordered(self):
        _check_validity(self.valid_from, self.valid_until)
        return self


class Credential(_Frozen):
    """Something presented at a door that names a person: a card, a PIN, a QR token, a face match."""

    kind: CredentialKind
    value: str = Field(min_length=1, max_length=256)
    person_id: str = _ID
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _ordered(self):
        _check_validity(self.valid_from, self.valid_until)
        return self


def clock_seconds(text: str) -> int:
    """Seconds since midnight from `HH:MM` or `HH:MM:SS`; `24:00` is the end of the day."""
    match = _CLOCK.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"expected a time of day HH:MM or HH:MM:SS, got {text!r}")
    hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
    total = hours * 3600 + minutes * 60 + seconds
    if total > DAY_SECONDS:
        raise ValueError(f"{text!r} is after 24:00")
    return total


class TimeWindow(_Frozen):
    """A weekly window in site-local time; an `end` before `start` runs into the next day."""

    day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        clock_seconds(value)
        return value

    @model_validator(mode="after")
    def _not_empty(self):
        if clock_seconds(self.start) == DAY_SECONDS:
            raise ValueError("a window cannot start at 24:00")
        if clock_seconds(self.start) == clock_seconds(self.end):
            raise ValueError("a window's start and end must differ (00:00-24:00 is the whole day)")
        return self

    def spans(self) -> list[tuple[int, int, int]]:
        """(weekday, start second, end second) pieces, split at midnight."""
        day, start, end = WEEKDAYS.index(self.day), clock_seconds(self.start), clock_seconds(self.end)
        if end > start:
            return [(day, start, end)]
        pieces = [(day, start, DAY_SECONDS)]
        if end > 0:
            pieces.append(((day + 1) % 7, 0, end))
        return pieces


class DoorRule(_Frozen):
    """Who (a group or one person) may open a door, by which methods, in which weekly windows."""

    rule_id: str = _ID
    door_id: str = _ID
    group: str | None = Field(default=None, min_length=1, max_length=128)
    person_id: str | None = Field(default=None, min_length=1, max_length=128)
    windows: tuple[TimeWindow, ...] = Field(min_length=1)
    valid_from: date | None = None
    valid_until: date | None = None
    methods: frozenset[CredentialKind] = DEFAULT_METHODS

    @model_validator(mode="after")
    def _one_subject(self):
        if (self.group is None) == (self.person_id is None):
            raise ValueError("a door rule names exactly one of group or person_id")
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError("valid_until must not be before valid_from")
        if not self.methods:
            raise ValueError("methods must not be empty")
        return self


class AntiPassback(_Frozen):
    """A person who passed `entry_door` must pass `exit_door` before `entry_door` again."""

    entry_door: str = _ID
    exit_door: str = _ID
    mode: Literal["hard", "soft"] = "hard"

    @model_validator(mode="after")
    def _two_doors(self):
        if self.entry_door == self.exit_door:
            raise ValueError("entry_door and exit_door must differ")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.entry_door, self.exit_door)


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: Reason
    person_id: str | None = None
    rule_id: str | None = None
    anti_passback_violation: bool = False  # granted in spite of a soft anti-passback pair


@dataclass(slots=True)
class _CompiledRule:
    rule: DoorRule
    spans_by_day: tuple[tuple[tuple[int, int], ...], ...]  # weekday -> ((start s, end s), ...)

    @classmethod
    def of(cls, rule: DoorRule) -> _CompiledRule:
        days: list[list[tuple[int, int]]] = [[] for _ in range(7)]
        for window in rule.windows:
            for day, start, end in window.spans():
                days[day].append((start, end))
        return cls(rule, tuple(tuple(sorted(d)) for d in days))

    def open_at(self, weekday: int, second: int) -> bool:
        return any(start <= second < end for start, end in self.spans_by_day[weekday])

    def valid_on(self, day: date) -> bool:
        rule = self.rule
        return (rule.valid_from is None or day >= rule.valid_from) and (
            rule.valid_until is None or day <= rule.valid_until)


@dataclass
class _DoorIndex:
    by_person: dict[str, list[_CompiledRule]] = field(default_factory=dict)
    by_group: dict[str, list[_CompiledRule]] = field(default_factory=dict)


class PassageState:
    """Who is inside each anti-passback pair; kept apart so a new policy can take it over."""

    def __init__(self) -> None:
        # pair key -> {person id inside: when they passed the entry door}
        self.inside: dict[tuple[str, str], dict[str, datetime | None]] = {}


def _timezone(tz: tzinfo | str) -> tzinfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


class AccessPolicy:
    """The synced set, indexed for `decide`; `update` applies a delta in place (removals first).

    `decide`, `record_passage` and `update` are meant to run on one thread (the gateway's loop):
    a delta of a few items costs microseconds, so there is no need to rebuild or copy the policy.
    """

    def __init__(
        self,
        persons: Iterable[Person] = (),
        credentials: Iterable[Credential] = (),
        rules: Iterable[DoorRule] = (),
        anti_passback: Iterable[AntiPassback] = (),
        passages: PassageState | None = None,
    ):
        self.persons: dict[str, Person] = {}
        self.credentials: dict[str, Credential] = {}
        self.rules: dict[str, DoorRule] = {}
        self.doors: dict[str, _DoorIndex] = {}
        self.anti_passback: dict[tuple[str, str], AntiPassback] = {}
        self.pairs_by_entry: dict[str, list[AntiPassback]] = {}
        self.pairs_by_exit: dict[str, list[AntiPassback]] = {}
        self._values_by_person: dict[str, set[str]] = {}
        self._rule_ids_by_person: dict[str, set[str]] = {}
        self.passages = passages if passages is not None else PassageState()
        self.update(persons, credentials, rules, anti_passback)

    def update(
        self,
        persons: Iterable[Person] = (),
        credentials: Iterable[Credential] = (),
        rules: Iterable[DoorRule] = (),
        anti_passback: Iterable[AntiPassback] = (),
        *,
        remove_persons: Iterable[str] = (),
        remove_credentials: Iterable[str] = (),
        remove_rules: Iterable[str] = (),
        remove_anti_passback: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Apply a delta as `AccessStore` does: removals, then upserts by id; a removed person
        takes their credentials and the rules naming them along."""
        for person_id in remove_persons:
            for value in list(self._values_by_person.get(person_id, ())):
                self._remove_credential(value)
            for rule_id in list(self._rule_ids_by_person.get(person_id, ())):
                self._remove_rule(rule_id)
            self.persons.pop(person_id, None)
        for value in remove_credentials:
            self._remove_credential(value)
        for rule_id in remove_rules:
            self._remove_rule(rule_id)
        pairs_changed = False
        for key in remove_anti_passback:
            pairs_changed |= self.anti_passback.pop(tuple(key), None) is not None

        for person in persons:
            self.persons[person.person_id] = person
        for credential in credentials:
            self._remove_credential(credential.value)
            self.credentials[credential.value] = credential
            self._values_by_person.setdefault(credential.person_id, set()).add(credential.value)
        for rule in rules:
            self._remove_rule(rule.rule_id)
            self._add_rule(rule)
        for pair in anti_passback:
            self.anti_passback[pair.key] = pair
            pairs_changed = True
        if pairs_changed:
            self.pairs_by_entry, self.pairs_by_exit = {}, {}
            for pair in self.anti_passback.values():
                self.pairs_by_entry.setdefault(pair.entry_door, []).append(pair)
                self.pairs_by_exit.setdefault(pair.exit_door, []).append(pair)

    def _remove_credential(self, value: str) -> None:
        credential = self.credentials.pop(value, None)
        if credential is not None:
            values = self._values_by_person.get(credential.person_id)
            if values is not None:
                values.discard(value)
                if not values:
                    del self._values_by_person[credential.person_id]

    def _add_rule(self, rule: DoorRule) -> None:
        self.rules[rule.rule_id] = rule
        index = self.doors.setdefault(rule.door_id, _DoorIndex())
        table, key = (index.by_person, rule.person_id) if rule.person_id else (index.by_group, rule.group)
        table.setdefault(key, []).append(_CompiledRule.of(rule))
        if rule.person_id:
            self._rule_ids_by_person.setdefault(rule.person_id, set()).add(rule.rule_id)

    def _remove_rule(self, rule_id: str) -> None:
        rule = self.rules.pop(rule_id, None)
        if rule is None:
            return
        index = self.doors[rule.door_id]
        table, key = (index.by_person, rule.person_id) if rule.person_id else (index.by_group, rule.group)
        remaining = [r for r in table[key] if r.rule.rule_id != rule_id]
        if remaining:
            table[key] = remaining
        else:
            del table[key]
        if not index.by_person and not index.by_group:
            del self.doors[rule.door_id]
        if rule.person_id:
            ids = self._rule_ids_by_person[rule.person_id]
            ids.discard(rule_id)
            if not ids:
                del self._rule_ids_by_person[rule.person_id]

    def _rules_for(self, door_id: str, person: Person) -> list[_CompiledRule]:
        index = self.doors.get(door_id)
        if index is None:
            return []
        found = list(index.by_person.get(person.person_id, ()))
        for group in person.groups:
            found.extend(index.by_group.get(group, ()))
        return found

    def decide(self, door_id: str, method: str, credential_value: str, at: datetime,
               tz: tzinfo | str) -> Decision:
        """Whether `credential_value`, presented by `method` at `door_id` at `at`, opens the door.

        `at` must be timezone-aware; `tz` is the site's time zone (windows and rule dates are local).
        The first failing check gives the reason; soft anti-passback grants with a flag.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("`at` must be a timezone-aware datetime")
        credential = self.credentials.get(credential_value)
        if credential is None or credential.kind != method:
            return Decision(False, Reason.UNKNOWN_CREDENTIAL)
        person_id = credential.person_id
        if credential.valid_from is not None and at < credential.valid_from:
            return Decision(False, Reason.CREDENTIAL_NOT_YET_VALID, person_id)
        if credential.valid_until is not None and at >= credential.valid_until:
            return Decision(False, Reason.CREDENTIAL_EXPIRED, person_id)
        person = self.persons.get(person_id)
        if person is None:  # the store refuses this; kept for policies built by hand
            return Decision(False, Reason.UNKNOWN_CREDENTIAL, person_id)
        if person.valid_from is not None and at < person.valid_from:
            return Decision(False, Reason.PERSON_NOT_YET_VALID, person_id)
        if person.valid_until is not None and at >= person.valid_until:
            return Decision(False, Reason.PERSON_EXPIRED, person_id)

        candidates = self._rules_for(door_id, person)
        if not candidates:
            return Decision(False, Reason.NO_RULE_FOR_DOOR, person_id)
        candidates = [r for r in candidates if method in r.rule.methods]
        if not candidates:
            reason = Reason.FACE_ONLY_NOT_ALLOWED if method == "face" else Reason.METHOD_NOT_ALLOWED
            return Decision(False, reason, person_id)
        local = at.astimezone(_timezone(tz))
        today = local.date()
        candidates = [r for r in candidates if r.valid_on(today)]
        if not candidates:
            return Decision(False, Reason.OUTSIDE_VALID_DATES, person_id)
        weekday, second = local.weekday(), local.hour * 3600 + local.minute * 60 + local.second
        matching = next((r for r in candidates if r.open_at(weekday, second)), None)
        if matching is None:
            return Decision(False, Reason.OUTSIDE_TIME_WINDOW, person_id)

        violation = False
        for pair in self.pairs_by_entry.get(door_id, ()):
            if person_id in self.passages.inside.get(pair.key, ()):
                if pair.mode == "hard":
                    return Decision(False, Reason.ANTI_PASSBACK, person_id, matching.rule.rule_id)
                violation = True
        return Decision(True, Reason.GRANTED, person_id, matching.rule.rule_id, violation)

    def record_passage(self, door_id: str, person_id: str, at: datetime | None = None) -> None:
        """A person went through `door_id` (after a grant, once the door sensor says so)."""
        for pair in self.pairs_by_entry.get(door_id, ()):
            self.passages.inside.setdefault(pair.key, {})[person_id] = at
        for pair in self.pairs_by_exit.get(door_id, ()):
            self.passages.inside.get(pair.key, {}).pop(person_id, None)
