"""Access control at the site's doors: card frames, the decision, and the synced set behind it.

- `wiegand`: Wiegand frames (H10301 26-bit, HID 34-bit, raw) and the OSDP driver's card reads to
  canonical credential values.
- `rules`: persons, credentials, door rules, anti-passback, and `AccessPolicy.decide`.
- `store`: `AccessStore`, the set in SQLite, updated by the `access.sync` downlink.

Dependencies run one way: store -> rules (and gateway.commands, for its error class); wiegand
stands alone.
"""

from .rules import (AccessPolicy, AntiPassback, Credential, Decision, DoorRule, PassageState, Person, Reason,
                    TimeWindow)
from .store import AccessStore, AccessSync, SyncError, apply_to_policy, parse_sync
from .wiegand import (WiegandCard, WiegandError, decode as decode_wiegand, encode_h10301, encode_w34,
                      value_from_card_read)

__all__ = [
    "AccessPolicy", "AccessStore", "AccessSync", "AntiPassback", "Credential", "Decision", "DoorRule",
    "PassageState", "Person", "Reason", "SyncError", "TimeWindow", "WiegandCard", "WiegandError",
    "apply_to_policy", "decode_wiegand", "encode_h10301", "encode_w34", "parse_sync", "value_from_card_read",
]
