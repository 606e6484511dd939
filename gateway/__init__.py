"""Per-site edge gateway: drivers, local decisions and exactly-once sync to the central platform."""

__version__ = "0.1.0"
