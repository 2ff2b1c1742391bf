"""Host-side decoding of the serial protocol: throughput, and what single
bit flips get through.

Throughput.  A stream of N SAMPLE frames (3 channels, the simulated board's
format) is built outside the timer; then, repeated R times and reported as
median and p99 over the repeats:

  framing   FrameDecoder.feed over the stream in 4096-byte reads (COBS,
            length byte, CRC)
  messages  framing + messages.decode of every payload
  link      SerialLink on a real pty: the stream is written to the master
            in 1 KiB pieces and polled back until every sample is decoded
            (kernel tty, pyserial, framing, messages, sequence and schema
            checks: what the host does per sample)
  noisy     framing over the same stream with 1 % of its bytes flipped

For scale: 115200 baud carries at most 11,520 bytes/s, about 640 of these
frames per second.

Single bit flips.  A stream of M messages of every type (mostly SAMPLEs of
plant-like values and COMMANDs; HELLO, HEARTBEAT, ERROR, HELLO_REQUEST,
CONFIGURE now and then; seq counting up) is framed, once with the frames
back to back and once with a 0x00 before every frame (empty frames, which
the protocol allows: a sender flushing its receiver).  Each trial flips one
random bit of the stream (seeded) and decodes the frame it hit and the two
after it (a damaged frame can run on into the next one, not further); a
*wrong delivery* is a payload that was never sent.  Counted for the
protocol's framing (version 2: FrameDecoder) and for version 1's (COBS +
CRC of the payload, no length byte, no final XOR; simulated here), with how
many of the wrong payloads `messages.decode` would also accept.

    python benchmarks/bench_bridge.py            # writes results and README block
    python benchmarks/bench_bridge.py --quick --no-write
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

COMMAND = "python benchmarks/bench_bridge.py"
JSON_PATH = os.path.join(common.RESULTS_DIR, "bench_bridge.json")
BEGIN, END = "<!-- bench_bridge:begin -->", "<!-- bench_bridge:end -->"


def build_stream(n, seed=0):
    from rtrl_edge.bridge import encode_frame, messages
    rng = np.random.default_rng(seed)
    raw = rng.integers(-32768, 32767, size=(n, 3))
    frames = [encode_frame(messages.encode(messages.Sample(tuple(int(v) for v in r)),
                                           seq=i, t_us=i * 10000)) for i, r in enumerate(raw)]
    return b"".join(frames), len(frames[0])


def time_repeats(fn, repeats):
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out


# -- single bit flips ------------------------------------------------------------

def message_mix(n, seed):
    """`n` payloads of every message type, seq 0, 1, ..."""
    from rtrl_edge.bridge import messages as m
    rng = np.random.default_rng(seed)
    small = lambda k: tuple(int(v) for v in np.clip(rng.normal(0, 800, k), -32768, 32767))
    out = []
    for i, kind in enumerate(rng.choice(7, size=n, p=[0.55, 0.2, 0.05, 0.05, 0.05, 0.05, 0.05])):
        k = int(rng.integers(1, 7))
        msg = (m.Sample(small(3)), m.Command(small(1)), m.Heartbeat(),
               m.Error(int(rng.integers(1, 7)), int(rng.integers(0, 300))),
               m.Hello(m.VERSION, k, 1, 1, 10000, (0.001,) * k, (0.0,) * k),
               m.HelloRequest(), m.Configure(int(rng.choice([0, 5000])), 1))[kind]
        out.append(m.encode(msg, seq=i, t_us=10000 * i))
    return out


def decode_v1(window):
    """Version 1's receiver: COBS(payload || crc16) per 0x00-ended block."""
    from rtrl_edge.bridge.framing import cobs_decode, crc16_ccitt
    out = []
    for block in window.split(b"\x00"):
        if not block or len(block) > 67:        # empty, or an overflow
            continue
        try:
            d = cobs_decode(block)
        except ValueError:
            continue
        if len(d) >= 3 and len(d) - 2 <= 64 and \
                crc16_ccitt(d[:-2]) == int.from_bytes(d[-2:], "big"):
            out.append(d[:-2])
    return out


def flip_trials(units, payloads, decode, n_trials, seed):
    """Wrong deliveries (payloads never sent) over `n_trials` single bit
    flips of b"".join(units), and how many of them decode as messages."""
    from rtrl_edge.bridge import ProtocolError, messages
    starts = np.cumsum([0] + [len(u) for u in units])
    bits = np.random.default_rng(seed).integers(0, 8 * int(starts[-1]), size=n_trials)
    ks = np.searchsorted(starts, bits // 8, side="right") - 1
    wrong = accepted = 0
    for bit, k in zip(bits.tolist(), ks.tolist()):
        window = bytearray(b"".join(units[k:k + 3]))
        window[bit // 8 - int(starts[k])] ^= 1 << (bit % 8)
        sent = payloads[k:k + 3]
        for p in decode(bytes(window)):
            if p not in sent:
                wrong += 1
                try:
                    messages.decode(p)
                    accepted += 1
                except ProtocolError:
                    pass
    return wrong, accepted


def bench_flips(n_flips, n_messages=20000, seed=0):
    from rtrl_edge.bridge import FrameDecoder, encode_frame
    from rtrl_edge.bridge.framing import cobs_encode, crc16_ccitt
    payloads = message_mix(n_messages, seed)
    v1 = lambda p: cobs_encode(p + crc16_ccitt(p).to_bytes(2, "big")) + b"\x00"
    schemes = (("version 2: length byte, check XOR 0xFFFF", encode_frame,
                lambda w: FrameDecoder().feed(w)),
               ("version 1: CRC of the payload only (simulated)", v1, decode_v1))
    rows = []
    for name, encode, decode in schemes:
        for lead, stream in ((b"", "frames back to back"), (b"\x00", "a 0x00 before each frame")):
            units = [lead + encode(p) for p in payloads]
            t0 = time.perf_counter()
            wrong, accepted = flip_trials(units, payloads, decode, n_flips, seed + 1)
            rows.append(dict(framing=name, stream=stream, flips=n_flips, wrong=wrong,
                             wrong_accepted_by_messages=accepted,
                             stream_bytes=sum(map(len, units)),
                             seconds=time.perf_counter() - t0))
            print(f"  {name}, {stream}: {wrong} wrong in {n_flips} flips "
                  f"({rows[-1]['seconds']:.0f} s)", file=sys.stderr)
    return rows


def write_readme(text):
    common.write_block(BEGIN, END, text,
                       "## `bench_bridge.py` -- host decoding: throughput and bit flips\n\n"
                       + "\n\n".join(__doc__.split("\n\n")[1:5]) + "\n\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--flips", type=int, default=1_000_000,
                   help="single bit flips per framing and stream (default: %(default)s)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.repeats, args.flips = 500, 3, 20000
    rtrl_edge = common.import_library()
    from rtrl_edge.bridge import FrameDecoder, SerialLink, messages

    stream, frame_len = build_stream(args.frames)
    chunks = [stream[i:i + 4096] for i in range(0, len(stream), 4096)]
    rng = np.random.default_rng(1)
    noisy = bytearray(stream)
    flips = rng.choice(len(noisy), size=len(noisy) // 100, replace=False)
    for i in flips:
        noisy[i] ^= 1 << int(rng.integers(8))
    noisy_chunks = [bytes(noisy[i:i + 4096]) for i in range(0, len(noisy), 4096)]

    def framing():
        d = FrameDecoder()
        for c in chunks:
            d.feed(c)
        assert d.stats["frames"] == args.frames

    def framing_messages():
        d = FrameDecoder()
        for c in chunks:
            for payload in d.feed(c):
                messages.decode(payload)

    master, slave = os.openpty()
    tty = os.ttyname(slave)
    tty_chunks = [stream[i:i + 1024] for i in range(0, len(stream), 1024)]

    def link():
        # a real tty: the bytes go through the kernel and pyserial's read
        with SerialLink(tty, timeout=0.05) as ln:
            got = written = 0
            deadline = time.monotonic() + 60
            for c in tty_chunks:
                os.write(master, c)
                written += len(c)
                # read it all back before writing more: a pty holds only a few KiB
                while ln.decoder_stats["bytes"] < written and time.monotonic() < deadline:
                    got += sum(isinstance(m, messages.Sample) for m in ln.poll())
            assert got == args.frames, got

    def noisy_framing():
        d = FrameDecoder()
        for c in noisy_chunks:
            d.feed(c)

    env = common.environment(rtrl_edge)
    rows = {}
    for name, fn in (("framing", framing), ("framing + messages", framing_messages),
                     ("link over a pty", link), ("framing, 1 % bytes flipped", noisy_framing)):
        fn()                                            # warm-up
        ns = time_repeats(fn, args.repeats)
        per_frame = ns / args.frames
        rows[name] = dict(median_ns_per_frame=float(np.median(per_frame)),
                          p99_ns_per_frame=float(np.percentile(per_frame, 99)),
                          frames_per_s=float(1e9 / np.median(per_frame)),
                          mb_per_s=float(len(stream) / (np.median(ns) / 1e9) / 1e6))
    os.close(master)
    os.close(slave)
    flip_rows = bench_flips(args.flips)
    per_s = 11520 / frame_len
    lines = [f"{args.frames} SAMPLE frames of {frame_len} bytes (3 channels), "
             f"{args.repeats} repeats; per frame, median / p99 over the repeats:", "",
             "| stage | µs per frame (median / p99) | frames/s | MB/s |", "|---|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['median_ns_per_frame'] / 1e3:.2f} / "
                     f"{r['p99_ns_per_frame'] / 1e3:.2f} | {r['frames_per_s']:,.0f} | "
                     f"{r['mb_per_s']:.1f} |")
    lines += ["", f"115200 baud carries at most ~{per_s:,.0f} such frames/s; the host decodes "
              f"{rows['link over a pty']['frames_per_s'] / per_s:,.0f}x that through "
              "pyserial.", "",
              f"Single bit flips: {args.flips:,} per row, one per trial, of a stream of "
              f"20,000 messages of every type (seeded):", "",
              "| framing | stream | wrong payloads delivered | of which messages.decode accepts |",
              "|---|---|---:|---:|"]
    for r in flip_rows:
        lines.append(f"| {r['framing']} | {r['stream']} | {r['wrong']:,} "
                     f"({r['wrong'] / r['flips']:.3%}) | {r['wrong_accepted_by_messages']:,} |")
    lines += ["", "Environment: " + common.format_environment(env)]
    text = "\n".join(lines)
    print(text)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_bridge", quick=bool(args.quick),
                  command=" ".join([COMMAND, *given]), frames=args.frames,
                  repeats=args.repeats, frame_bytes=frame_len, environment=env, rows=rows,
                  flips=flip_rows)
    if not args.no_write:
        common.publish(result, text, JSON_PATH, write_readme)
    return result


if __name__ == "__main__":
    main()
