"""Wiegand frames as OSDP delivers them: H10301 and HID 34-bit decoding with parity, raw frames."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gateway.access.wiegand import WiegandError, decode, encode_h10301, encode_w34, raw_value, value_from_card_read


def frame_from_bit_string(bits: str) -> tuple[int, bytes]:
    """(count, data) from '0'/'1' text, MSB-first, zero padded: built independently of the module."""
    padded = bits + "0" * (-len(bits) % 8)
    return len(bits), bytes(int(padded[i:i + 8], 2) for i in range(0, len(padded), 8))


def parity_framed(payload: str, half: int) -> str:
    even = str(payload[:half].count("1") % 2)
    odd = str(1 - payload[half:].count("1") % 2)
    return even + payload + odd


def flip(count: int, data: bytes, bit: int) -> bytes:
    """`data` with frame bit `bit` (0 = first on the wire) inverted."""
    value = int.from_bytes(data, "big") ^ (1 << (len(data) * 8 - 1 - bit))
    return value.to_bytes(len(data), "big")


def test_h10301_layout_matches_an_independent_bit_string():
    payload = format(123, "08b") + format(45678, "016b")
    count, data = frame_from_bit_string(parity_framed(payload, 12))
    assert (count, data) == encode_h10301(123, 45678)
    card = decode(count, data)
    assert (card.format, card.facility, card.card, card.value) == ("h10301", 123, 45678, "h10301:123:45678")
    assert card.kind == "card"


def test_h10301_known_frame_all_zero_fields():
    # facility 0, card 0: even parity bit 0, odd parity bit 1 -> only the last bit set
    assert encode_h10301(0, 0) == (26, bytes([0, 0, 0, 0b0100_0000]))
    assert decode(26, bytes([0, 0, 0, 0b0100_0000])).value == "h10301:0:0"


def test_34_bit_layout_matches_an_independent_bit_string():
    payload = format(4321, "016b") + format(65535, "016b")
    count, data = frame_from_bit_string(parity_framed(payload, 16))
    assert (count, data) == encode_w34(4321, 65535)
    card = decode(count, data)
    assert (card.format, card.facility, card.card, card.value) == ("w34", 4321, 65535, "w34:4321:65535")


@pytest.mark.parametrize("encode, count", [(encode_h10301, 26), (encode_w34, 34)])
@pytest.mark.parametrize("parity_bit", ["first", "last"])
def test_wrong_parity_bit_is_refused(encode, count, parity_bit):
    _, data = encode(1, 2)
    with pytest.raises(WiegandError, match="parity"):
        decode(count, flip(count, data, 0 if parity_bit == "first" else count - 1))


def test_padding_bits_are_ignored():
    count, data = encode_h10301(5, 6)
    assert decode(count, data[:-1] + bytes([data[-1] | 0b0011_1111])).value == "h10301:5:6"


@pytest.mark.parametrize("count, data", [(26, b"\x00\x00\x00"), (26, b"\x00" * 5), (0, b""), (-3, b"\x00"),
                                         (5000, b"\x00" * 625)])
def test_impossible_frames_are_refused(count, data):
    with pytest.raises(WiegandError):
        decode(count, data)


def test_other_lengths_pass_through_raw_with_padding_cleared():
    card = decode(37, bytes.fromhex("0123456789"))
    assert (card.format, card.bits, card.facility, card.card) == ("raw", 37, None, None)
    assert card.value == "raw:37:0123456788"  # the 3 padding bits of the last byte cleared
    assert decode(37, bytes.fromhex("012345678f")).value == card.value
    assert raw_value(37, bytes.fromhex("0123456789")) == card.value


def test_encoders_refuse_out_of_range_numbers():
    with pytest.raises(ValueError):
        encode_h10301(256, 1)
    with pytest.raises(ValueError):
        encode_h10301(1, 65536)
    with pytest.raises(ValueError):
        encode_w34(65536, 1)


@given(st.integers(0, 255), st.integers(0, 65535))
def test_h10301_round_trip(facility, card):
    decoded = decode(*encode_h10301(facility, card))
    assert (decoded.facility, decoded.card) == (facility, card)
    assert decoded.value == f"h10301:{facility}:{card}"


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_w34_round_trip(facility, card):
    decoded = decode(*encode_w34(facility, card))
    assert (decoded.facility, decoded.card, decoded.value) == (facility, card, f"w34:{facility}:{card}")


@given(st.integers(0, 255), st.integers(0, 65535), st.integers(0, 25))
def test_any_single_flipped_bit_of_a_26_bit_frame_is_refused(facility, card, bit):
    count, data = encode_h10301(facility, card)
    with pytest.raises(WiegandError):
        decode(count, flip(count, data, bit))


@given(st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 33))
def test_any_single_flipped_bit_of_a_34_bit_frame_is_refused(facility, card, bit):
    count, data = encode_w34(facility, card)
    with pytest.raises(WiegandError):
        decode(count, flip(count, data, bit))


@given(st.integers(-10, 2000), st.binary(max_size=300))
def test_arbitrary_input_gives_a_card_or_wiegand_error(count, data):
    try:
        card = decode(count, data)
    except WiegandError:
        return
    assert len(data) == (count + 7) // 8
    assert card.value.startswith(("h10301:", "w34:", "raw:"))


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.binary(min_size=(n + 7) // 8,
                                                                                max_size=(n + 7) // 8))))
def test_well_sized_frames_of_other_lengths_always_decode_raw(frame):
    count, data = frame
    if count in (26, 34):
        return
    card = decode(count, data)
    assert card.format == "raw" and card.value.startswith(f"raw:{count}:")


def test_card_read_events_of_the_osdp_driver_give_canonical_values():
    count, data = encode_h10301(12, 3456)
    assert value_from_card_read({"format": "wiegand", "bits": count, "data": data.hex()}) == "h10301:12:3456"
    # the reader did not say Wiegand: not interpreted, passed through
    assert value_from_card_read({"format": "raw", "bits": count, "data": data.hex()}) == f"raw:26:{data.hex()}"
    assert value_from_card_read({"format": "ascii", "bits": 32, "data": b"AB12".hex()}) == "ascii:41423132"
    with pytest.raises(WiegandError, match="parity"):
        value_from_card_read({"format": "wiegand", "bits": count, "data": flip(count, data, 5).hex()})


@given(st.dictionaries(st.sampled_from(["format", "bits", "data", "reader"]),
                       st.none() | st.integers(-5, 70) | st.sampled_from(["wiegand", "raw", "ascii", "zz", "0a1b"])
                       | st.binary(max_size=9).map(bytes.hex)))
def test_any_card_read_gives_a_value_or_wiegand_error(read):
    try:
        value = value_from_card_read(read)
    except WiegandError:
        return
    assert value.startswith(("h10301:", "w34:", "raw:", "ascii:"))
