"""Tests of rtrl_edge.bridge.messages: the payload layouts of
firmware_bridge/PROTOCOL.md sections 2-3.

Layouts are checked against bytes packed here with `struct` from the table in
the protocol, not only against `encode`; every malformed body must raise
ProtocolError naming the type and what is wrong.
"""
import dataclasses
import math
import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtrl_edge.bridge import MAX_PAYLOAD, ProtocolError, messages as m

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
I16 = st.integers(-32768, 32767)
U8 = st.integers(0, 255)
F32 = st.floats(width=32, allow_nan=False)
OTHER_VERSION = 1        # a HELLO of another version: its values are not judged here


def header(kind, seq=0, t_us=0):
    return struct.pack("<BHI", kind, seq, t_us)


# -- round trips ---------------------------------------------------------------

def _f32(x):
    return float(np.float32(x))


def _possible_scale():
    mag = st.floats(_f32(1e-9), _f32(1e9), width=32)
    return st.tuples(mag, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])


@st.composite
def hellos(draw):
    """HELLOs of this version with possible values, or of any other version
    with any values."""
    n = draw(st.integers(1, 6))
    version = draw(st.one_of(st.just(m.VERSION), U8))
    if version == m.VERSION:
        mode, period = draw(st.sampled_from(m.MODES)), draw(st.integers(*m.PERIOD_US_RANGE))
        scale, offset = _possible_scale(), st.floats(_f32(-1e9), _f32(1e9), width=32)
    else:
        mode, period, scale, offset = draw(U8), draw(U32), F32, F32
    return m.Hello(version=version, n_channels=n, n_actuators=draw(st.integers(0, 4)),
                   mode=mode, period_us=period,
                   scale=tuple(draw(st.lists(scale, min_size=n, max_size=n))),
                   offset=tuple(draw(st.lists(offset, min_size=n, max_size=n))),
                   seq=draw(U16), t_us=draw(U32))


MESSAGES = st.one_of(
    hellos(),
    st.builds(m.Sample, st.lists(I16, min_size=1, max_size=6).map(tuple), U16, U32),
    st.builds(m.Command, st.lists(I16, min_size=0, max_size=4).map(tuple), U16, U32),
    st.builds(m.Heartbeat, U16, U32),
    st.builds(m.Error, U8, U16, U16, U32),
    st.builds(m.HelloRequest, U16, U32),
    st.builds(m.Configure, U32, U8, U16, U32),
)


@given(MESSAGES)
@settings(max_examples=500, deadline=None)
def test_round_trip_every_type(msg):
    payload = m.encode(msg)
    assert len(payload) <= MAX_PAYLOAD
    assert struct.unpack_from("<HI", payload, 1) == (msg.seq, msg.t_us)
    back = m.decode(payload)
    assert type(back) is type(msg)
    assert back == msg


@given(MESSAGES, st.integers(-2 ** 20, 2 ** 20), st.integers(-2 ** 40, 2 ** 40))
def test_seq_and_t_us_wrap(msg, seq, t_us):
    back = m.decode(m.encode(msg, seq=seq, t_us=t_us))
    assert back.seq == seq % 65536
    assert back.t_us == t_us % 2 ** 32


@pytest.mark.parametrize("seq,t_us", [(65535, 2 ** 32 - 1), (65536, 2 ** 32), (65537, 2 ** 32 + 1)])
def test_wrap_edges(seq, t_us):
    back = m.decode(m.encode(m.Heartbeat(), seq=seq, t_us=t_us))
    assert (back.seq, back.t_us) == (seq % 65536, t_us % 2 ** 32)


def test_layouts_match_the_protocol_table():
    hello = m.Hello(2, 2, 1, m.MODE_PLANT, 10000, (0.001, 0.5), (0.0, -1.25), seq=7, t_us=99)
    assert m.VERSION == 2
    assert m.encode(hello) == header(1, 7, 99) + struct.pack("<BBBBI4f", 2, 2, 1, 1, 10000,
                                                             0.001, 0.0, 0.5, -1.25)
    assert m.encode(m.Sample((-32768, 32767, 1), 65535, 2 ** 32 - 1)) == \
        header(2, 65535, 2 ** 32 - 1) + b"\x00\x80\xff\x7f\x01\x00"
    assert m.encode(m.Command((1000, -1000), 3, 4)) == header(3, 3, 4) + struct.pack("<2h", 1000, -1000)
    assert m.encode(m.Heartbeat(1, 2)) == header(4, 1, 2)
    assert m.encode(m.Error(6, 513, 1, 2)) == header(5, 1, 2) + b"\x06\x01\x02"
    assert m.encode(m.HelloRequest(1, 2)) == header(6, 1, 2)
    assert m.encode(m.Configure(1000, 0xFF, 1, 2)) == header(7, 1, 2) + b"\xe8\x03\x00\x00\xff"
    assert m.decode(b"\x02\x01\x02\x03\x04\x05\x06\x07\x08") == m.Sample((0x0807,), 0x0201, 0x06050403)


def test_largest_hello_fits_a_frame():
    hello = m.Hello(m.VERSION, 6, 4, 0, 100, (1.0,) * 6, (0.0,) * 6)
    assert len(m.encode(hello)) == 7 + 8 + 48 <= MAX_PAYLOAD
    assert m.decode(m.encode(hello)) == hello


def test_int16_extremes_and_float32_special_values():
    raw = (-32768, 32767, 0, -1, 1, -32767)
    assert m.decode(m.encode(m.Sample(raw))).raw == raw
    specials = (float("inf"), -float("inf"), -0.0, 2.0 ** -149, 3.4028234663852886e38, -1.0)
    hello = m.Hello(OTHER_VERSION, 6, 0, 0, 0, specials, specials[::-1])
    back = m.decode(m.encode(hello))
    assert back.scale == specials and back.offset == specials[::-1]
    assert math.copysign(1.0, back.scale[2]) == -1.0
    nan = m.decode(m.encode(m.Hello(OTHER_VERSION, 1, 0, 0, 0, (float("nan"),), (0.0,))))
    assert math.isnan(nan.scale[0])


def test_scales_are_rounded_to_float32():
    back = m.decode(m.encode(m.Hello(m.VERSION, 1, 0, 0, 1000, (0.1,), (1 / 3,))))
    assert back.scale == (float(np.float32(0.1)),) and back.offset == (float(np.float32(1 / 3)),)


# -- Sample.values -------------------------------------------------------------

def test_sample_values_scaling():
    hello = m.decode(m.encode(m.Hello(m.VERSION, 3, 1, 1, 10000, (0.001, 0.001, 0.5),
                                      (0.0, 0.0, -1.25))))
    values = m.Sample((1000, -1000, -2)).values(hello)
    assert values == pytest.approx((1.0, -1.0, -2.25), rel=1e-6, abs=1e-9)


@given(hellos(), st.data())
def test_sample_values_against_float64_reference(hello, data):
    n = hello.n_channels
    hello = m.decode(m.encode(hello))                   # what a host really holds
    raw = tuple(data.draw(st.lists(I16, min_size=n, max_size=n)))
    got = np.array(m.Sample(raw).values(hello), dtype=np.float64)
    with np.errstate(all="ignore"):
        ref = (np.array(raw, np.float64) * np.array(hello.scale, np.float32).astype(np.float64)
               + np.array(hello.offset, np.float32).astype(np.float64))
    assert len(got) == n
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


def test_sample_rate():
    assert m.Hello(1, 1, 0, 0, 10000, (1.0,), (0.0,)).sample_rate_hz == 100.0
    assert math.isnan(m.Hello(1, 1, 0, 0, 0, (1.0,), (0.0,)).sample_rate_hz)


def test_error_names():
    assert m.Error(1, 0).name == "BAD_CRC" and m.Error(6, 0).name == "SAMPLE_LATE"
    assert m.Error(99, 0).name == "code 99"


# -- malformed payloads --------------------------------------------------------

@pytest.mark.parametrize("n", range(7))
def test_short_header(n):
    with pytest.raises(ProtocolError, match=rf"payload of {n} bytes .*7-byte header"):
        m.decode(bytes([2]) * n)


VALID_BODY_SIZES = {
    m.SAMPLE: {2, 4, 6, 8, 10, 12},
    m.COMMAND: {0, 2, 4, 6, 8},
    m.HEARTBEAT: {0},
    m.ERROR: {3},
    m.HELLO_REQUEST: {0},
    m.CONFIGURE: {5},
}


@pytest.mark.parametrize("kind", sorted(VALID_BODY_SIZES), ids=lambda k: m.TYPE_NAMES[k])
def test_wrong_body_length_for_each_type(kind):
    for size in range(0, MAX_PAYLOAD - 7 + 1):
        payload = header(kind, 1, 2) + bytes(range(1, size + 1))
        if size in VALID_BODY_SIZES[kind]:
            assert m.decode(payload).seq == 1
            continue
        with pytest.raises(ProtocolError) as err:
            m.decode(payload)
        msg = str(err.value)
        assert m.TYPE_NAMES[kind] in msg and str(size) in msg, msg


def _hello_body(n_ch, n_act=0, extra=b""):
    return struct.pack("<BBBBI", 1, n_ch, n_act, 0, 1000) + b"\x00" * (8 * max(n_ch, 0)) + extra


@pytest.mark.parametrize("size", range(8))
def test_hello_shorter_than_fixed_part(size):
    with pytest.raises(ProtocolError, match=rf"HELLO body must be at least 8 bytes, got {size}"):
        m.decode(header(m.HELLO) + _hello_body(1)[:size])


@pytest.mark.parametrize("n_ch", range(1, 7))
@pytest.mark.parametrize("delta", [-8, -4, -1, 1, 4, 8])
def test_hello_body_length_must_match_channel_count(n_ch, delta):
    body = _hello_body(n_ch)
    body = body[:len(body) + delta] if delta < 0 else body + b"\x00" * delta
    if len(body) < 8:
        return
    with pytest.raises(ProtocolError,
                       match=rf"HELLO body must be {8 + 8 * n_ch} bytes, got {len(body)}"):
        m.decode(header(m.HELLO) + body)


@pytest.mark.parametrize("n_ch,n_act", [(0, 0), (7, 0), (255, 0), (1, 5), (2, 255)])
@pytest.mark.parametrize("version", [m.VERSION, OTHER_VERSION])
def test_hello_with_too_many_channels_or_actuators(n_ch, n_act, version):
    payload = header(m.HELLO) + struct.pack("<BBBBI", version, n_ch, n_act, 0, 1000) + bytes(48)
    field, value = ("n_channels", n_ch) if not 1 <= n_ch <= 6 else ("n_actuators", n_act)
    with pytest.raises(m.HelloError, match=rf"impossible HELLO: {field} = {value} ") as err:
        m.decode(payload[:MAX_PAYLOAD])
    assert (err.value.field, err.value.value) == (field, value)


def _hello_payload(version=m.VERSION, mode=1, period=10000, scale=0.001, offset=0.0):
    return (header(m.HELLO) + struct.pack("<BBBBI", version, 1, 1, mode, period)
            + struct.pack("<2f", scale, offset))


IMPOSSIBLE = [
    ("period_us", dict(period=0), "0", r"100\.\.60000000"),
    ("period_us", dict(period=99), "99", r"100\.\.60000000"),
    ("period_us", dict(period=60_000_001), "60000001", r"100\.\.60000000"),
    ("period_us", dict(period=2 ** 32 - 1), "4294967295", r"100\.\.60000000"),
    ("mode", dict(mode=2), "2", "0 .*or 1"),
    ("scale[0]", dict(scale=0.0), "0.0", r"1e-09 <= \|scale\| <= 1e\+09"),
    ("scale[0]", dict(scale=-0.0), "-0.0", r"\|scale\|"),
    ("scale[0]", dict(scale=float("nan")), "nan", r"\|scale\|"),
    ("scale[0]", dict(scale=float("inf")), "inf", r"\|scale\|"),
    ("scale[0]", dict(scale=-2e9), "-2000000000.0", r"\|scale\|"),
    ("scale[0]", dict(scale=1e-10), "1.000000013351432e-10", r"\|scale\|"),
    ("offset[0]", dict(offset=float("-inf")), "-inf", r"\|offset\| <= 1e\+09"),
    ("offset[0]", dict(offset=float("nan")), "nan", r"\|offset\|"),
    ("offset[0]", dict(offset=3e9), "3000000000.0", r"\|offset\|"),
]


@pytest.mark.parametrize("field,kw,shown,allowed", IMPOSSIBLE,
                         ids=[f"{f}={s}" for f, _, s, _ in IMPOSSIBLE])
def test_hello_with_an_impossible_value_is_refused_naming_it(field, kw, shown, allowed):
    """PROTOCOL §3's bounds: decode raises HelloError naming the field, its
    value and what is allowed; encode refuses to send such a HELLO."""
    with pytest.raises(m.HelloError, match=rf"impossible HELLO: {re.escape(field)} = "
                                           rf"{re.escape(shown)} \(the protocol allows .*{allowed}") as err:
        m.decode(_hello_payload(**kw))
    assert err.value.field == field
    hello = m.decode(_hello_payload(version=OTHER_VERSION, **kw))    # not ours to judge
    with pytest.raises(m.HelloError):
        m.encode(dataclasses.replace(hello, version=m.VERSION))


@pytest.mark.parametrize("kw", [dict(period=100), dict(period=60_000_000), dict(mode=0),
                                dict(scale=1e-9), dict(scale=-1e-9), dict(scale=1e9),
                                dict(scale=-1e9), dict(offset=1e9), dict(offset=-1e9)],
                         ids=lambda kw: "-".join(f"{k}={v:g}" for k, v in kw.items()))
def test_hello_values_at_the_bounds_are_accepted(kw):
    hello = m.decode(_hello_payload(**kw))
    assert m.decode(m.encode(hello)) == hello


def test_too_many_sample_channels_and_command_values():
    with pytest.raises(ProtocolError, match=r"SAMPLE .*1\.\.6 int16, got 14 bytes"):
        m.decode(header(m.SAMPLE) + bytes(14))
    with pytest.raises(ProtocolError, match=r"COMMAND .*0\.\.4 int16, got 10 bytes"):
        m.decode(header(m.COMMAND) + bytes(10))


@pytest.mark.parametrize("kind", [0, 8, 0x42, 0xFF])
def test_unknown_type(kind):
    with pytest.raises(ProtocolError, match=rf"unknown message type 0x{kind:02x}"):
        m.decode(header(kind) + b"\x01\x02")


@given(st.binary(max_size=MAX_PAYLOAD))
@settings(max_examples=500)
def test_decode_of_any_payload_raises_only_protocolerror(payload):
    try:
        msg = m.decode(payload)
    except ProtocolError as exc:
        assert str(exc)
        return
    again = m.encode(msg)                      # every accepted layout is canonical
    if isinstance(msg, m.Hello) and any(map(math.isnan, msg.scale + msg.offset)):
        assert len(again) == len(payload)     # NaN payload bits need not survive
    else:
        assert again == payload


def test_protocolerror_is_a_valueerror():
    assert issubclass(ProtocolError, ValueError)


# -- encode errors -------------------------------------------------------------

def test_encode_rejects_too_many_command_values():
    with pytest.raises(ProtocolError, match="at most 4"):
        m.encode(m.Command((1, 2, 3, 4, 5)))


def test_encode_rejects_non_messages():
    with pytest.raises(TypeError, match="not a protocol message"):
        m.encode(object())


@pytest.mark.parametrize("msg", [
    m.Sample(()),                              # 0 channels
    m.Sample((1,) * 7),                        # 7 channels
    m.Hello(1, 0, 0, 0, 1000, (), ()),         # a schema no receiver accepts
], ids=["sample0", "sample7", "hello0"])
def test_encode_refuses_what_decode_refuses(msg):
    """The host must not put on the wire a message its own decoder (and the
    firmware's) rejects."""
    with pytest.raises(ProtocolError):
        m.encode(msg)


@pytest.mark.parametrize("msg", [
    m.Command((32768,)), m.Command((-32769,)), m.Sample((40000,)),
    m.Error(256, 0), m.Configure(2 ** 32, 0), m.Configure(0, 256),
], ids=["cmd+", "cmd-", "sample", "errcode", "period", "mode"])
def test_encode_out_of_range_field_is_a_valueerror(msg):
    """Out-of-range values raise ValueError (ProtocolError is one), not
    struct.error, so a caller's `except ValueError` sees them."""
    with pytest.raises(ValueError):
        m.encode(msg)
