"""Tests of rtrl_edge.bridge.framing: CRC-16/CCITT-FALSE, COBS, frames and the
incremental FrameDecoder (firmware_bridge/PROTOCOL.md section 1).

The robustness tests build byte streams of valid frames interleaved with
damage, feed them split at arbitrary points and check what the decoder
delivers and counts against a model of the stream written here.  They run
with ``derandomize=True``: a CRC-16 lets about 1 in 65536 random corruptions
through, so a random seed would make them flaky; a fixed one makes any such
coincidence either always or never happen.
"""
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rtrl_edge.bridge import framing
from rtrl_edge.bridge.framing import (MAX_PAYLOAD, FrameDecoder, cobs_decode, cobs_encode,
                                      crc16_ccitt, encode_frame)

FUZZ = settings(derandomize=True, max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMIT = 67          # PROTOCOL §1: longest legal COBS block without its delimiter


# -- independent references ------------------------------------------------

def crc16_reference(data: bytes) -> int:
    """CRC-16/CCITT-FALSE one bit at a time, straight from the definition:
    poly 0x1021, init 0xFFFF, MSB first, no reflection, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        for i in range(7, -1, -1):
            feedback = ((crc >> 15) ^ (byte >> i)) & 1
            crc = (crc << 1) & 0xFFFF
            if feedback:
                crc ^= 0x1021
    return crc


def cobs_encode_reference(data: bytes) -> bytes:
    """The byte-at-a-time encoder of the Wikipedia article ("Consistent
    Overhead Byte Stuffing"), which writes no final code after a trailing run
    of 254 non-zero bytes."""
    out = bytearray([0])
    code_at, code = 0, 1
    for i, b in enumerate(data):
        if b:
            out.append(b)
            code += 1
        if not b or code == 0xFF:          # a zero, or a full block: close it
            out[code_at], code = code, 1
            if not b or i < len(data) - 1:
                code_at = len(out)
                out.append(0)
            else:
                code_at = None             # ended on a full block
    if code_at is not None:
        out[code_at] = code
    return bytes(out)


def wire(payload: bytes) -> bytes:
    """A wire frame built here, independently of encode_frame."""
    return cobs_encode_reference(payload + crc16_reference(payload).to_bytes(2, "big")) + b"\x00"


# -- CRC ---------------------------------------------------------------------

def test_crc_check_value():
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert crc16_reference(b"123456789") == 0x29B1          # the reference itself
    assert crc16_ccitt(b"") == 0xFFFF


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_crc_matches_bitwise_reference(data):
    assert crc16_ccitt(data) == crc16_reference(data)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_crc_is_incremental_and_has_zero_residue(a, b):
    assert crc16_ccitt(b, crc16_ccitt(a)) == crc16_ccitt(a + b)
    # appended MSB first, the CRC of message+CRC is 0 (no final XOR)
    assert crc16_ccitt(a + crc16_ccitt(a).to_bytes(2, "big")) == 0


# -- COBS --------------------------------------------------------------------

RUN_254 = bytes(range(1, 255))                       # 01 .. FE, no zero
WIKIPEDIA_VECTORS = [                                # (data, encoded without delimiter)
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 256)), b"\xff" + RUN_254 + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize("data,encoded", WIKIPEDIA_VECTORS,
                         ids=[f"vec{i}" for i in range(len(WIKIPEDIA_VECTORS))])
def test_cobs_known_vectors(data, encoded):
    assert cobs_encode(data) == encoded
    assert cobs_decode(encoded) == data
    assert cobs_encode_reference(data) == encoded     # the reference agrees


@pytest.mark.parametrize("data", [RUN_254, b"\x00" + RUN_254], ids=["254", "00+254"])
def test_cobs_trailing_run_of_254(data):
    """A packet ending in 254 non-zero bytes: Wikipedia's encoder writes
    FF <254 bytes>; the paper's StuffData (Cheshire & Baker 1999, fig. 2)
    appends a final 01.  Both must decode to the data, and the encoder must
    write one of the two."""
    short = cobs_encode_reference(data)
    assert short.endswith(b"\xff" + RUN_254)
    assert cobs_decode(short) == data
    assert cobs_decode(short + b"\x01") == data
    assert cobs_encode(data) in (short, short + b"\x01")


@given(st.one_of(
    st.binary(max_size=1200),
    st.binary(min_size=250, max_size=800).map(lambda b: b.replace(b"\x00", b"\x5a")),
    st.integers(0, 600).map(lambda n: bytes(n)),
    st.lists(st.sampled_from([b"\x00", RUN_254, RUN_254[:253], b"\x07"]),
             max_size=8).map(b"".join),
))
@example(b"")
@example(b"\x00" * 300)
@example(b"\x01" * 254)
@example(b"\x01" * 255)
@example(b"\x01" * 508 + b"\x00")
@settings(max_examples=400, deadline=None)
def test_cobs_round_trip_no_zero_and_size_bound(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(data) + 1 <= len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(enc) == data
    # the firmware may use the other (Wikipedia) form: the host must read it
    assert cobs_decode(cobs_encode_reference(data)) == data


@pytest.mark.parametrize("bad", [
    b"\x00",                 # a zero where a code is expected
    b"\x03\x11\x00",         # a zero inside a block
    b"\x05\x11\x22",         # block runs past the end
    b"\xff" + b"\x01" * 10,  # 0xFF block needs 254 bytes
    b"\x02\x11\x02",         # last block runs past the end
])
def test_cobs_decode_rejects_malformed(bad):
    with pytest.raises(ValueError, match="COBS"):
        cobs_decode(bad)


@given(st.binary(max_size=80))
def test_cobs_decode_raises_only_valueerror(data):
    if 0 in data:                       # any zero is a code or inside a block
        with pytest.raises(ValueError):
            cobs_decode(data)
    else:
        try:
            out = cobs_decode(data)
        except ValueError:
            return
        assert cobs_decode(cobs_encode(out)) == out


# -- frames --------------------------------------------------------------------

def test_encode_frame_layout():
    payload = b"123456789"
    frame = encode_frame(payload)
    assert frame == b"\x0c123456789\x29\xb1\x00"
    assert frame == wire(payload)


def test_encode_frame_rejects_oversized_payload():
    encode_frame(bytes(MAX_PAYLOAD))                          # the maximum is fine
    with pytest.raises(ValueError, match=r"65 bytes.*at most 64"):
        encode_frame(bytes(MAX_PAYLOAD + 1))


def test_frame_size_limit_matches_protocol():
    assert MAX_PAYLOAD == 64
    assert framing.max_encoded_size() == LIMIT
    assert len(encode_frame(b"\x01" * MAX_PAYLOAD)) <= LIMIT + 1     # 68 on the wire


def test_empty_payload_is_either_refused_or_delivered():
    """What encode_frame accepts, FrameDecoder must deliver (or encode_frame
    must refuse it)."""
    try:
        frame = encode_frame(b"")
    except ValueError:
        return
    dec = FrameDecoder()
    assert dec.feed(frame) == [b""], dec.stats


PAYLOADS = st.lists(st.binary(min_size=1, max_size=MAX_PAYLOAD), max_size=12)


def _split(stream: bytes, cuts):
    cuts = sorted(set(c for c in cuts if 0 < c < len(stream)))
    bounds = [0] + cuts + [len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


@given(PAYLOADS, st.lists(st.integers(0, 2000), max_size=30),
       st.sampled_from([bytes, bytearray, memoryview]))
@settings(max_examples=300, deadline=None)
def test_frames_round_trip_through_decoder_in_any_split(payloads, cuts, kind):
    stream = b"".join(encode_frame(p) for p in payloads)
    assert stream == b"".join(wire(p) for p in payloads)
    dec = FrameDecoder()
    got = []
    for chunk in _split(stream, cuts):
        got += dec.feed(kind(chunk))
    assert got == payloads
    assert dec.stats == dict(frames=len(payloads), crc_errors=0, cobs_errors=0,
                             overflows=0, bytes=len(stream), resyncs=0)


@given(PAYLOADS)
@settings(max_examples=100, deadline=None)
def test_frames_round_trip_one_byte_at_a_time(payloads):
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    got = []
    for i in range(len(stream)):
        got += dec.feed(stream[i:i + 1])
    assert got == payloads


def test_frame_of_maximum_size_round_trips():
    for payload in (b"\xff" * MAX_PAYLOAD, bytes(MAX_PAYLOAD), bytes(range(1, 65))):
        assert FrameDecoder().feed(encode_frame(payload)) == [payload]


def test_empty_blocks_between_frames_are_ignored():
    dec = FrameDecoder()
    assert dec.feed(b"\x00\x00" + encode_frame(b"a") + b"\x00\x00\x00") == [b"a"]
    assert dec.stats["crc_errors"] == dec.stats["cobs_errors"] == dec.stats["overflows"] == 0


def test_decoder_rejects_bad_max_payload():
    for bad in (0, 5000):
        with pytest.raises(ValueError, match="max_payload"):
            FrameDecoder(bad)


def test_reset_forgets_partial_frame_keeps_stats():
    dec = FrameDecoder()
    frame = encode_frame(b"hello")
    dec.feed(b"\x00\x03\x01")             # garbage frame
    dec.feed(frame[:4])
    before = dict(dec.stats)
    dec.reset()
    assert dec.stats == before
    assert dec.feed(frame) == [b"hello"]


def test_reset_mid_stream_counts_a_cut_first_frame_as_resync():
    """A port opened on a running sender first sees the tail of a frame: that
    is a resync, not an error; after the first delimiter errors count again."""
    frame = encode_frame(b"\x02\x05\x00payload")
    dec = FrameDecoder()
    dec.reset(mid_stream=True)
    assert dec.feed(frame[5:] + frame) == [b"\x02\x05\x00payload"]
    assert dec.stats["resyncs"] == 1
    assert dec.stats["crc_errors"] == dec.stats["cobs_errors"] == 0
    dec.feed(frame[5:])                                  # now a real error
    assert dec.stats["resyncs"] == 1
    assert dec.stats["crc_errors"] + dec.stats["cobs_errors"] == 1


@pytest.mark.parametrize("lead", [b"", b"\x00", b"\x00\x00"])
def test_reset_mid_stream_delivers_an_intact_first_frame(lead):
    dec = FrameDecoder()
    dec.reset(mid_stream=True)
    assert dec.feed(lead + encode_frame(b"first") + b"\x07\x07\x00") == [b"first"]
    assert dec.stats["resyncs"] == 0                     # the garbage came later
    assert dec.stats["crc_errors"] + dec.stats["cobs_errors"] == 1


def test_plain_reset_counts_errors_not_resyncs():
    dec = FrameDecoder()
    dec.reset()
    dec.feed(b"\x07\x07\x00")
    assert dec.stats["resyncs"] == 0 and dec.stats["cobs_errors"] == 1


# -- robustness ---------------------------------------------------------------

def _flip(data: bytes, bit: int) -> bytes:
    bit %= 8 * len(data)
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def damaged_streams(draw):
    """(pieces, originals): pieces are (kind, bytes, payload) whose bytes are
    concatenated into the stream; originals are every payload the stream was
    built from (damaged or not)."""
    pieces, originals = [], []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["valid", "valid", "valid", "garbage", "garbage_nz",
                                     "flip", "cut", "oversized", "merged"]))
        if kind in ("valid", "flip", "cut", "merged"):
            p = draw(st.binary(min_size=1, max_size=MAX_PAYLOAD))
            originals.append(p)
            frame = encode_frame(p)
        if kind == "valid":
            pieces.append((kind, frame, p))
        elif kind == "garbage":
            pieces.append((kind, draw(st.binary(min_size=1, max_size=200)), None))
        elif kind == "garbage_nz":
            g = draw(st.binary(min_size=1, max_size=200)).replace(b"\x00", b"\xa5")
            pieces.append((kind, g, None))
        elif kind == "flip":          # any bit of the wire frame, delimiter included
            bits = draw(st.sets(st.integers(0, 8 * len(frame) - 1), min_size=1, max_size=3))
            for bit in bits:                    # distinct bits: the frame does change
                frame = _flip(frame, bit)
            pieces.append((kind, frame, p))
        elif kind == "cut":            # cut short: the delimiter and more are lost
            # (losing only the delimiter leaves an intact frame that the next
            # delimiter completes: not damage)
            pieces.append((kind, frame[:draw(st.integers(1, len(frame) - 2))], p))
        elif kind == "oversized":
            big = draw(st.binary(min_size=MAX_PAYLOAD + 1, max_size=300))
            originals.append(big)
            body = cobs_encode(big + crc16_ccitt(big).to_bytes(2, "big")) + b"\x00"
            pieces.append((kind, body, big))
        elif kind == "merged":         # two frames, the delimiter between them lost
            q = draw(st.binary(min_size=1, max_size=MAX_PAYLOAD))
            originals.append(q)
            pieces.append((kind, frame[:-1] + encode_frame(q), p))
    return pieces, originals


def _intact(pieces):
    """Payloads of the untouched frames that start at the beginning of the
    stream or right after a 0x00, in order: exactly what must be delivered."""
    out, prev = [], 0
    for kind, data, payload in pieces:
        if kind == "valid" and prev == 0:
            out.append(payload)
        if data:
            prev = data[-1]
    return out


@given(damaged_streams(), st.lists(st.integers(0, 5000), max_size=40), st.booleans())
@FUZZ
def test_decoder_survives_damage_and_delivers_every_intact_frame(built, cuts, bytewise):
    pieces, originals = built
    stream = b"".join(d for _, d, _ in pieces)
    chunks = [stream[i:i + 1] for i in range(len(stream))] if bytewise else _split(stream, cuts)
    dec = FrameDecoder()
    buf_len = len(dec._buf)
    got = []
    for chunk in chunks:
        got += dec.feed(chunk)                 # never raises
        assert len(dec._buf) == buf_len        # bounded: the buffer never grows
        assert dec._len <= LIMIT
    for p in got:                              # never a corrupted payload
        assert p in originals
    expected = _intact(pieces)
    it = iter(got)                             # every intact frame, in order
    assert all(any(p == q for q in it) for p in expected), (expected, got)
    assert got == expected                     # and nothing else
    assert dec.stats["frames"] == len(got)
    assert dec.stats["bytes"] == len(stream)
    # flushed by one more delimiter, every damaged piece has been counted,
    # and no stretch between two delimiters was counted twice
    assert dec.feed(b"\x00") == []
    errors = dec.stats["crc_errors"] + dec.stats["cobs_errors"] + dec.stats["overflows"]
    if any(kind not in ("valid", "garbage") for kind, _, _ in pieces):
        assert errors >= 1
    assert errors + dec.stats["frames"] <= stream.count(0) + 1


# Damage whose bucket is determined, each isolated between delimiters and
# followed by a valid frame.  "cut" and short garbage may be either a COBS or
# a CRC error (counted together as "cobs_or_crc").

@st.composite
def isolated_damage(draw):
    kind = draw(st.sampled_from(["crc_flip", "cobs_bad", "short", "oversized",
                                 "garbage_long", "garbage_short", "merged", "cut", "empty"]))
    p = draw(st.binary(min_size=1, max_size=MAX_PAYLOAD))
    raw = p + crc16_ccitt(p).to_bytes(2, "big")
    if kind == "crc_flip":     # one bit of payload or CRC, before COBS: always a CRC error
        return kind, cobs_encode(_flip(raw, draw(st.integers(0, 8 * len(raw) - 1)))), "crc_errors"
    if kind == "cobs_bad":     # first code points past the end of the block
        enc = cobs_encode(raw)
        return kind, bytes([draw(st.integers(len(enc) + 1, 255))]) + enc[1:], "cobs_errors"
    if kind == "short":        # valid COBS, too short to hold a CRC and a byte
        return kind, cobs_encode(draw(st.binary(min_size=1, max_size=2))), "cobs_errors"
    if kind == "oversized":
        big = draw(st.binary(min_size=MAX_PAYLOAD + 1, max_size=400))
        return kind, cobs_encode(big + crc16_ccitt(big).to_bytes(2, "big")), "overflows"
    if kind == "garbage_long":
        g = draw(st.binary(min_size=LIMIT + 1, max_size=600)).replace(b"\x00", b"\x33")
        return kind, g, "overflows"
    if kind == "garbage_short":
        g = draw(st.binary(min_size=1, max_size=LIMIT)).replace(b"\x00", b"\x33")
        return kind, g, "cobs_or_crc"
    if kind == "merged":       # CRC of p1|crc1|00|p2 can never equal crc(p2)
        q = draw(st.binary(min_size=1, max_size=MAX_PAYLOAD))
        body = encode_frame(p)[:-1] + encode_frame(q)[:-1]
        return kind, body, ("overflows" if len(body) > LIMIT else "crc_errors")
    if kind == "cut":
        enc = cobs_encode(raw)
        return kind, enc[:draw(st.integers(1, len(enc) - 1))], "cobs_or_crc"
    return kind, b"", None


@given(st.lists(st.tuples(isolated_damage(), st.binary(min_size=1, max_size=MAX_PAYLOAD)),
                min_size=1, max_size=12),
       st.lists(st.integers(0, 8000), max_size=30))
@FUZZ
def test_decoder_counts_damage_in_the_right_bucket(items, cuts):
    stream = bytearray(b"\x00")
    expected_payloads = []
    want = dict(crc_errors=0, cobs_errors=0, overflows=0, cobs_or_crc=0)
    for (kind, body, bucket), good in items:
        stream += body + b"\x00" + encode_frame(good)
        expected_payloads.append(good)
        if bucket:
            want[bucket] += 1
    dec = FrameDecoder()
    got = []
    for chunk in _split(bytes(stream), cuts):
        got += dec.feed(chunk)
    assert got == expected_payloads
    s = dec.stats
    assert s["overflows"] == want["overflows"], (items, s)
    assert s["crc_errors"] >= want["crc_errors"]
    assert s["cobs_errors"] >= want["cobs_errors"]
    assert s["crc_errors"] + s["cobs_errors"] == (want["crc_errors"] + want["cobs_errors"]
                                                  + want["cobs_or_crc"]), (items, s)


def test_single_flipped_crc_bit_is_a_crc_error():
    p = b"\x02\x07\x00\x10\x27\x00\x00\xe8\x03"
    raw = p + crc16_ccitt(p).to_bytes(2, "big")
    for bit in range(8 * len(p), 8 * len(raw)):         # each bit of the CRC bytes
        dec = FrameDecoder()
        assert dec.feed(cobs_encode(_flip(raw, bit)) + b"\x00" + encode_frame(p)) == [p]
        assert dec.stats["crc_errors"] == 1 and dec.stats["cobs_errors"] == 0


def test_missing_delimiter_loses_exactly_the_two_frames():
    a, b, c = b"first", b"second", b"third"
    stream = encode_frame(a)[:-1] + encode_frame(b) + encode_frame(c)
    dec = FrameDecoder()
    assert dec.feed(stream) == [c]
    assert dec.stats["crc_errors"] == 1


def test_overflow_drops_up_to_next_delimiter_then_resyncs():
    dec = FrameDecoder()
    frame = encode_frame(b"ok")
    # a run of 68 non-zero bytes (one too many) followed by the frame with
    # no delimiter between: the frame is part of the dropped run
    assert dec.feed(b"\x01" * (LIMIT + 1) + frame) == []
    assert dec.stats["overflows"] == 1
    assert dec.feed(frame) == [b"ok"]
    # exactly 67 bytes is not an overflow (it is a damaged frame)
    dec.feed(b"\x44" * LIMIT + b"\x00")
    assert dec.stats["overflows"] == 1


def test_garbage_of_five_megabytes_without_zero_is_bounded():
    rng = random.Random(20240611)
    garbage = rng.randbytes(5 * 2 ** 20).replace(b"\x00", b"\x7f")
    dec = FrameDecoder()
    buf, buf_len = dec._buf, len(dec._buf)
    view = memoryview(garbage)
    pos = 0
    while pos < len(garbage):
        n = rng.choice((1, 7, 64, 100, 4096, 65536))
        assert dec.feed(view[pos:pos + n]) == []
        pos += n
        assert dec._buf is buf and len(dec._buf) == buf_len
    assert dec.stats["overflows"] == 1                  # one run, one overflow
    assert dec.stats["bytes"] == len(garbage)
    assert dec.feed(b"\x00" + encode_frame(b"after")) == [b"after"]


def test_garbage_runs_between_zeros_are_each_counted():
    rng = random.Random(7)
    runs = [rng.choice((0, 1, 5, 66, 67, 68, 69, 300, 5000)) for _ in range(400)]
    stream = b"\x00".join(rng.randbytes(n).replace(b"\x00", b"\x01") for n in runs) + b"\x00"
    dec = FrameDecoder()
    for i in range(0, len(stream), 1000):
        dec.feed(stream[i:i + 1000])
    assert dec.stats["overflows"] == sum(n > LIMIT for n in runs)
    # the short ones are damaged frames (or, about 1 in 65536, a lucky one)
    short = sum(0 < n <= LIMIT for n in runs)
    assert dec.stats["cobs_errors"] + dec.stats["crc_errors"] + dec.stats["frames"] == short
