"""The set-up picture: a frame with detections, track ids, counting lines and zones drawn on it."""

from __future__ import annotations

import cv2
import numpy as np

from .settings import AnalyticsSettings
from .track import Track

LINE_COLOUR = (0, 215, 255)   # amber, BGR
IN_COLOUR = (80, 200, 60)     # green marks the "in" side
ZONE_COLOUR = (255, 160, 40)  # blue
MASK_COLOUR = (60, 60, 60)
TRACK_COLOUR = (60, 60, 230)  # red


def _poly(points) -> np.ndarray:
    return np.asarray(points, np.float32).round().astype(np.int32).reshape(-1, 1, 2)


def annotate(image: np.ndarray, settings: AnalyticsSettings | None, tracks: list[Track],
             occupancy: dict[str, int] | None = None) -> np.ndarray:
    out = image.copy()
    if settings is not None:
        for mask in settings.masks:
            cv2.fillPoly(out, [_poly(mask)], MASK_COLOUR)
        for zone in settings.zones:
            cv2.polylines(out, [_poly(zone.polygon)], True, ZONE_COLOUR, 2)
            label = f"{zone.id}: {occupancy.get(zone.id, 0)}" if occupancy else zone.id
            x, y = np.asarray(zone.polygon[0]).astype(int)
            cv2.putText(out, label, (int(x) + 4, int(y) + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, ZONE_COLOUR, 2)
        for line in settings.lines:
            cv2.polylines(out, [_poly(line.points)], False, LINE_COLOUR, 2)
            (x1, y1), (x2, y2) = line.points[0], line.points[1]
            # A short arrow from the middle of the first segment towards the "in" side.
            dx, dy = x2 - x1, y2 - y1
            norm = max(1e-6, float(np.hypot(dx, dy)))
            nx, ny = (dy / norm, -dx / norm) if line.in_side == "left" else (-dy / norm, dx / norm)
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            cv2.arrowedLine(out, (int(mx), int(my)), (int(mx + 30 * nx), int(my + 30 * ny)), IN_COLOUR, 2,
                            tipLength=0.3)
            cv2.putText(out, f"{line.id} in", (int(mx + 34 * nx), int(my + 34 * ny)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, IN_COLOUR, 2)
    for track in tracks:
        x1, y1, x2, y2 = (int(v) for v in track.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), TRACK_COLOUR, 2)
        cv2.putText(out, f"#{track.track_id}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, TRACK_COLOUR, 2)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()
