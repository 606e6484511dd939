"""On-device visit detection: capture, motion gating, detection, tracking, counting.

Stages, each in its own module, in the order a frame meets them (as in Frigate's pipeline):
capture (newest frame only) -> motion (skip still frames) -> detect (ONNX) -> track (ByteTrack
style) -> count (lines and zones) -> visit events. Only counts and events leave the gateway.
"""
