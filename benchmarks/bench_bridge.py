"""Host-side decode throughput of the serial protocol.

A stream of N SAMPLE frames (3 channels, the simulated board's format) is
built outside the timer; then, repeated R times and reported as median and
p99 over the repeats:

  framing   FrameDecoder.feed over the stream in 4096-byte reads (COBS + CRC)
  messages  framing + messages.decode of every payload
  link      SerialLink on a real pty: the stream is written to the master
            in 1 KiB pieces and polled back until every sample is decoded
            (kernel tty, pyserial, framing, messages, sequence and schema
            checks: what the host does per sample)
  noisy     framing over the same stream with 1 % of its bytes flipped

For scale: 115200 baud carries at most 11,520 bytes/s, about 800 of these
frames per second.

    python benchmarks/bench_bridge.py            # writes results and README block
    python benchmarks/bench_bridge.py --quick --no-write
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.repeats = 500, 3
    import rtrl_edge
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
    lines = [f"{args.frames} SAMPLE frames of {frame_len} bytes (3 channels), "
             f"{args.repeats} repeats; per frame, median / p99 over the repeats:", "",
             "| stage | µs per frame (median / p99) | frames/s | MB/s |", "|---|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['median_ns_per_frame'] / 1e3:.2f} / "
                     f"{r['p99_ns_per_frame'] / 1e3:.2f} | {r['frames_per_s']:,.0f} | "
                     f"{r['mb_per_s']:.1f} |")
    lines += ["", "115200 baud carries at most ~800 such frames/s; the host decodes "
              f"{rows['link over a pty']['frames_per_s'] / 800:,.0f}x that through "
              "pyserial.", "", "Environment: " + common.format_environment(env)]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        os.makedirs(common.RESULTS_DIR, exist_ok=True)
        with open(JSON_PATH, "w", encoding="utf-8") as f:
            json.dump(common.to_json(dict(benchmark="bench_bridge", frames=args.frames,
                                          repeats=args.repeats, frame_bytes=frame_len,
                                          environment=env, rows=rows)), f, indent=2)
            f.write("\n")
        common.write_block(BEGIN, END,
                           f"Latest run: `python benchmarks/bench_bridge.py`\n\n{text}",
                           "## `bench_bridge.py` -- host decode throughput\n\n"
                           + __doc__.split("\n\n")[1] + "\n\n")
    return rows


if __name__ == "__main__":
    main()
