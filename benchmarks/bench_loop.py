"""Loop overhead (everything but the model step) and end-to-end per-sample
latency of the online loop at n_hidden = 32, against a 1 ms (1 kHz) and a
10 ms (100 Hz) budget.

Model: ``OnlineRNN(3, 32, 1, normalize=True, clip=1.0, optimizer="sgd",
lr=0.01)`` -- exact rtrl, and snap1 and cell="diag" for contrast -- inside
``Forecaster(net, 10, delta=True)``, as ``rtrl-edge run`` builds it (3 input
channels, the first one forecast 10 samples ahead).  The data are the
respiration recording's xyz (mm), played forwards and backwards, quantised to
the device's int16 (0.01 mm per LSB), plus a 4th channel carrying the
sample's index so that a command can be matched to the sample it answers
(the loop's inputs are channels 0-2, its target channel 0).  Per sample,
with ``time.perf_counter_ns``:

(a) model step alone: ``net.step(x_{t-h}, y_t - x_{t-h}[0])`` +
    ``net.forecast(last h inputs)``, the two model calls a
    ``Forecaster.update`` makes (inputs built outside the timer);
(b) ``OnlineLoop.process(values)`` with a ``PIController`` and a no-op sink:
    validation, scoring, Forecaster.update, controller, sink, histogram;
    (a) and (b) on two identical models, interleaved in rounds after a warm-up;
(c) end to end through the real serial path: a fake device thread writes
    SAMPLE frames (``bridge.encode_frame`` / ``messages``) to a pty master
    at 1 kHz and answers HELLO_REQUEST; the host runs ``OnlineLoop.run`` on
    ``SerialSource(SerialLink(pty_path))`` with the controller's command
    sent back over the link (``link.command(int(round(u * 1000)))``, as
    ``rtrl-edge run`` does).  Latency of a sample: from the moment the device
    thread's ``os.write`` of the frame's last byte returned to the moment the
    device thread has read, on the master, the first command frame decided
    with that sample seen (its own command, or -- for a sample the loop took
    in a backlog batch and did not act on -- the command of the batch's
    newest sample).  perf_counter_ns is shared by both threads; nothing is
    subtracted.  The fake device is a Python thread of the same process, so
    this includes the device thread reacquiring the GIL after its select()
    (a real device would not add that): an upper bound on the host's share.
    (c) runs in rounds (default 3), the learners in rotating order, each
    round with a fresh pty, device and model, its first samples (default 500)
    not counted.

Overheads: (b) - (a) and (c) - (a), as differences of the medians and of the
p99s (the distributions are measured separately).  Every measure is reported
against the 1 ms and 10 ms budgets: median and p99 as a fraction of the
budget, and the share of samples over it.

    python benchmarks/bench_loop.py                 # full run, writes results
    python benchmarks/bench_loop.py --quick --no-write

This is a benchmark, not a test: nothing asserts on timing.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import errno  # noqa: E402
import gc  # noqa: E402
import select  # noqa: E402
import textwrap  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

JSON_PATH = os.path.join(common.RESULTS_DIR, "bench_loop.json")
BEGIN, END = "<!-- bench_loop:begin -->", "<!-- bench_loop:end -->"
COMMAND = "python benchmarks/bench_loop.py"

N_HIDDEN, N_IN, HORIZON = 32, 3, 10
NET_KW = dict(normalize=True, clip=1.0, optimizer="sgd", lr=1e-2)
LEARNERS = (("rtrl", dict(learner="rtrl")), ("snap1", dict(learner="snap1")),
            ("diag", dict(cell="diag")))
BUDGETS_MS = (1.0, 10.0)
DEVICE_RATE_HZ = 1000.0
SCALE_MM = 0.01                      # device LSB of the position channels
MAX_SAMPLES = 32767                  # the index channel is one int16


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def make_hello(offsets, rate_hz=DEVICE_RATE_HZ):
    from rtrl_edge.bridge import messages as m
    return m.Hello(m.VERSION, 4, 1, m.MODE_ANALOG, int(round(1e6 / rate_hz)),
                   (SCALE_MM,) * 3 + (1.0,), tuple(float(o) for o in offsets) + (0.0,))


def make_stream(n, rate_hz=DEVICE_RATE_HZ):
    """(hello, raw int16 (n, 4), values float64 (n, 4) as the host decodes them)."""
    from rtrl_edge import data
    from rtrl_edge.bridge import messages as m
    xyz = np.asarray(data.load_recording().xyz, np.float64)
    loop = np.concatenate([xyz, xyz[-2:0:-1]])           # forwards and backwards
    xyz = np.resize(loop, (n, 3))
    offsets = np.round(xyz.mean(axis=0))
    raw = np.empty((n, 4), np.int64)
    raw[:, :3] = np.round((xyz - offsets) / SCALE_MM)
    raw[:, 3] = np.arange(n) % (MAX_SAMPLES + 1)
    if np.abs(raw).max() > 32767:
        raise ValueError("stream does not fit int16")
    hello = make_hello(offsets, rate_hz)
    stored = m.decode(m.encode(hello))                   # scales as float32, as received
    values = raw * np.array(stored.scale) + np.array(stored.offset)
    return hello, raw, values


# --------------------------------------------------------------------------
# (a) and (b)
# --------------------------------------------------------------------------

def build_net(rtrl_edge, kw, seed):
    return rtrl_edge.OnlineRNN(N_IN, N_HIDDEN, 1, seed=seed, **NET_KW, **kw)


def build_loop(rtrl_edge, kw, seed, values, source=None, sink=None, rate_hz=DEVICE_RATE_HZ):
    from rtrl_edge.forecast import Forecaster
    from rtrl_edge.adapters import ReplaySource
    from rtrl_edge.loop import OnlineLoop, PIController
    fc = Forecaster(build_net(rtrl_edge, kw, seed), HORIZON, delta=True)
    controller = PIController(setpoint=float(np.mean(values[:, 0])), dt=1.0 / rate_hz)
    return OnlineLoop(fc, source if source is not None else ReplaySource(values[:1]),
                      inputs=(0, 1, 2), targets=(0,), controller=controller,
                      sink=sink if sink is not None else (lambda u: None),
                      deadline_ms=BUDGETS_MS[0])


def model_calls(values):
    """Per sample t >= h, the arguments of the two model calls Forecaster.update
    makes: x_{t-h}, the delta target y_t - x_{t-h}[0], the window x_{t-h+1..t}."""
    x = np.ascontiguousarray(values[:, :N_IN], dtype=np.float32)
    h = HORIZON
    xs_old = [x[t - h] for t in range(h, len(x))]
    ys = [np.array([x[t, 0] - x[t - h, 0]], np.float32) for t in range(h, len(x))]
    wins = [x[t - h + 1:t + 1] for t in range(h, len(x))]
    return xs_old, ys, wins


def time_model(net, xs_old, ys, wins, start, count, out, pos):
    pc = time.perf_counter_ns
    step, forecast = net.step, net.forecast
    for i in range(start, start + count):
        a, b, w = xs_old[i], ys[i], wins[i]
        t0 = pc()
        step(a, b)
        forecast(w)
        t1 = pc()
        out[pos] = t1 - t0
        pos += 1
    return pos


def time_process(loop, rows, start, count, out, pos):
    pc = time.perf_counter_ns
    process = loop.process
    for i in range(start, start + count):
        v = rows[i]
        t0 = pc()
        process(v)
        t1 = pc()
        out[pos] = t1 - t0
        pos += 1
    return pos


def bench_model_and_process(rtrl_edge, kw, values, *, reps, rounds, seed):
    """(a) and (b) on identical models, interleaved in rounds."""
    block = max(1, reps // rounds)
    reps = block * rounds
    warm = min(2000, max(50, reps // 10))
    need = warm + reps + HORIZON
    vals = np.resize(values, (need, values.shape[1]))
    xs_old, ys, wins = model_calls(vals)
    rows = list(vals)
    net = build_net(rtrl_edge, kw, seed)
    loop = build_loop(rtrl_edge, kw, seed, vals)
    # warm-up: both see the same first samples (the loop's first h samples
    # have no model step; the model stream starts at t = h)
    time_model(net, xs_old, ys, wins, 0, warm, np.zeros(warm, np.int64), 0)
    time_process(loop, rows, 0, warm + HORIZON, np.zeros(warm + HORIZON, np.int64), 0)
    a = np.zeros(reps, np.int64)
    b = np.zeros(reps, np.int64)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            s = warm + r * block
            if r % 2 == 0:
                time_model(net, xs_old, ys, wins, s, block, a, r * block)
                time_process(loop, rows, s + HORIZON, block, b, r * block)
            else:
                time_process(loop, rows, s + HORIZON, block, b, r * block)
                time_model(net, xs_old, ys, wins, s, block, a, r * block)
    finally:
        if gc_was_enabled:
            gc.enable()
    return a, b, dict(warmup=warm, rounds=rounds, loop_counters=dict(loop.counters),
                      divergence_recoveries=int(net.stats["divergence_recoveries"]))


# --------------------------------------------------------------------------
# (c) end to end over a pty
# --------------------------------------------------------------------------

class FakeDevice(threading.Thread):
    """The board's side of a pty: answers HELLO_REQUEST with `hello`; once
    `go` is set, writes one SAMPLE frame every 1/rate s (on a fixed grid,
    resynchronised rather than bursting if the thread was late) and, between
    writes, waits in select() for the host's COMMAND frames.

    t_written[i]: perf_counter_ns right after the write of frame i returned;
    `commands()`: (perf_counter_ns right after the read that completed the
    frame, seq) per COMMAND.  While streaming, the thread only stores what it
    reads with its timestamp (decoded after the run), so that it holds the
    GIL -- shared with the host loop -- as briefly as it can.
    """

    def __init__(self, master, hello, frames, rate_hz):
        super().__init__(daemon=True)
        from rtrl_edge.bridge import FrameDecoder
        self.master, self.hello, self.frames = master, hello, frames
        self.period_ns = int(round(1e9 / rate_hz))
        self.go = threading.Event()
        self.stop_event = threading.Event()
        self.decoder = FrameDecoder()
        self.t_written = np.zeros(len(frames), np.int64)
        self.write_ns = np.zeros(len(frames), np.int64)   # duration of each write call
        self.chunks = []              # (perf_counter_ns after the read, bytes)
        self.streaming = False
        self.written = 0
        self.late = 0                 # writes more than one period behind the grid
        self.hellos = 0
        self.error = None
        self._seq = 0

    def run(self):
        try:
            while not self.go.is_set() and not self.stop_event.is_set():
                self._service(0.005)
            self.streaming = True
            pc = time.perf_counter_ns
            period = self.period_ns
            next_t = pc()
            n = len(self.frames)
            while self.written < n and not self.stop_event.is_set():
                now = pc()
                if now >= next_t:
                    i = self.written
                    t0 = pc()
                    self._write(self.frames[i])
                    t1 = pc()
                    self.t_written[i] = t1
                    self.write_ns[i] = t1 - t0
                    self.written = i + 1
                    next_t += period
                    if t1 - next_t > period:          # fell behind: no burst
                        self.late += 1
                        next_t = t1 + period
                else:
                    self._service((next_t - now) / 1e9)
            while not self.stop_event.is_set():
                self._service(0.005)
        except Exception as exc:                      # reported by main()
            self.error = exc

    def _write(self, data):
        view = memoryview(data)
        while view:
            try:
                k = os.write(self.master, view)
            except BlockingIOError:
                select.select([], [self.master], [], 0.01)
                continue
            view = view[k:]

    def _service(self, timeout):
        ready, _, _ = select.select([self.master], [], [], max(timeout, 0.0))
        if not ready:
            return
        try:
            data = os.read(self.master, 4096)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EAGAIN):
                return
            raise
        t = time.perf_counter_ns()
        if self.streaming:
            self.chunks.append((t, data))
            return
        from rtrl_edge.bridge import encode_frame, messages as m
        for payload in self.decoder.feed(data):
            if isinstance(m.decode(payload), m.HelloRequest):
                self.hellos += 1
                self._write(encode_frame(m.encode(self.hello, seq=self._seq)))
                self._seq += 1

    def commands(self):
        """(time read, seq) of every COMMAND frame read while streaming."""
        from rtrl_edge.bridge import messages as m
        out = []
        for t, data in self.chunks:
            for payload in self.decoder.feed(data):
                msg = m.decode(payload)
                if isinstance(msg, m.Command):
                    out.append((t, msg.seq))
        return out

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)


class TaggedSource:
    """SerialSource, remembering the index channel of each batch's newest
    sample (the one the loop acts on); exhausted after the last sample or a
    deadline."""

    def __init__(self, inner, last_index, deadline):
        self.inner = inner
        self.channels = inner.channels
        self.rate_hz = inner.rate_hz
        self.last_index = last_index
        self.deadline = deadline
        self.tag = -1
        self.exhausted = False
        self.timed_out = False

    @property
    def gap(self):
        return self.inner.gap

    def read(self):
        if self.exhausted:
            return []
        batch = self.inner.read()
        if batch:
            self.tag = int(batch[-1][3])
            if self.tag >= self.last_index:
                self.exhausted = True      # processed now; the next read ends the run
        elif time.monotonic() > self.deadline:
            self.exhausted = self.timed_out = True
        return batch

    def stats(self):
        return self.inner.stats()


def bench_e2e(rtrl_edge, kw, hello, raw, values, *, seed, warmup, rate_hz):
    import tty
    from rtrl_edge.bridge import SerialLink, encode_frame, messages as m
    from rtrl_edge.adapters import SerialSource
    n = len(raw)
    frames = [encode_frame(m.encode(m.Sample(tuple(int(v) for v in r)), seq=i + 1,
                                    t_us=(i * 1000) & 0xFFFFFFFF))
              for i, r in enumerate(raw)]
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    device = FakeDevice(master, hello, frames, rate_hz)
    device.start()
    link = None
    try:
        link = SerialLink(path, reconnect=False)
        source = TaggedSource(SerialSource(link, hello_timeout=5.0), n - 1,
                              deadline=time.monotonic() + n / rate_hz + 30.0)
        tag_of_seq = {}

        def sink(u):
            # the seq this command will carry: the link's count of sends
            tag_of_seq[link.stats["sent"] & 0xFFFF] = source.tag
            link.command(int(round(u * 1000)))

        loop = build_loop(rtrl_edge, kw, seed, values, source=source, sink=sink,
                          rate_hz=rate_hz)
        device.go.set()
        summary = loop.run()
        # let the device read the last commands: until it has read nothing
        # new for 20 ms (at most 1 s)
        deadline = time.monotonic() + 1.0
        seen = -1
        while time.monotonic() < deadline and len(device.chunks) != seen:
            seen = len(device.chunks)
            time.sleep(0.02)
    finally:
        device.stop()
        if link is not None:
            link.close()
        os.close(master)
        os.close(slave)
    if device.error is not None:
        raise RuntimeError(f"fake device failed: {device.error!r}")
    if source.timed_out:
        raise RuntimeError(f"end-to-end run timed out after {device.written} of {n} samples")

    # latency of sample i: to the first command decided with sample i seen
    commands = device.commands()
    cmds = [(t, tag_of_seq[seq]) for t, seq in commands if seq in tag_of_seq]
    tags = np.array([c[1] for c in cmds], np.int64)
    t_cmd = np.array([c[0] for c in cmds], np.int64)
    order = np.argsort(tags, kind="stable")
    tags, t_cmd = tags[order], t_cmd[order]
    idx = np.arange(warmup, n)
    k = np.searchsorted(tags, idx, side="left")
    ok = k < len(tags)
    lat = t_cmd[k[ok]] - device.t_written[idx[ok]]
    acted = np.isin(idx, tags)
    return lat, dict(scored=int(ok.sum()), acted=acted,
                     commands_read_by_device=len(commands), commands_matched=len(cmds),
                     device_late_writes=device.late, write_ns=device.write_ns[idx],
                     period_ns=np.diff(device.t_written[idx]), hello_requests=device.hellos,
                     loop_counters={k_: summary[k_] for k_ in (
                         "samples", "commands", "deadline_misses", "dropped_late",
                         "rejected", "gaps")},
                     hist=loop.hist, link=link.all_stats(),
                     divergence_recoveries=summary["divergence_recoveries"])


def pool_e2e(parts, lats, warmup):
    """One summary of the end-to-end rounds of a learner."""
    from rtrl_edge.loop import LatencyHistogram
    hist = LatencyHistogram()
    for p in parts:
        hist.counts += p["hist"].counts
        hist.total += p["hist"].total
        hist.max_ns = max(hist.max_ns, p["hist"].max_ns)

    def total(key, sub=None):
        return int(sum(p[key][sub] if sub else p[key] for p in parts))

    return dict(
        rounds=len(parts), samples_per_round=[p["loop_counters"]["samples"] for p in parts],
        warmup_excluded_per_round=warmup, scored=total("scored"),
        acted_on_share=float(np.mean(np.concatenate([p["acted"] for p in parts]))),
        commands_read_by_device=total("commands_read_by_device"),
        commands_matched=total("commands_matched"),
        device_late_writes=total("device_late_writes"),
        device_write_call=common.summarize(np.concatenate([p["write_ns"] for p in parts])),
        device_period=common.summarize(np.concatenate([p["period_ns"] for p in parts])),
        hello_requests=total("hello_requests"),
        loop_counters={k: total("loop_counters", k) for k in parts[0]["loop_counters"]},
        process_histogram=hist.summary_us(),
        link={k: total("link", k) for k in parts[0]["link"]},
        divergence_recoveries=total("divergence_recoveries"),
        round_median_us=[float(np.median(x)) / 1e3 for x in lats],
        round_p99_us=[float(np.percentile(x, 99)) / 1e3 for x in lats])


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def budget_view(stats):
    """Median and p99 as fractions of each budget (stats in µs)."""
    return {f"{b:g}ms": dict(median_fraction=stats["median_us"] / (b * 1e3),
                             p99_fraction=stats["p99_us"] / (b * 1e3))
            for b in BUDGETS_MS}


def measure(ns):
    ns = np.asarray(ns, np.int64)
    s = common.summarize(ns)
    s["budgets"] = budget_view(s)
    for b in BUDGETS_MS:
        s["budgets"][f"{b:g}ms"]["share_over"] = float(np.mean(ns > b * 1e6))
    return s


def overhead(total, model):
    d = dict(median_us=total["median_us"] - model["median_us"],
             p99_us=total["p99_us"] - model["p99_us"])
    d["budgets"] = budget_view(d)
    return d


def _pct(x):
    return f"{100 * x:.3g} %" if x >= 0.001 else f"{100 * x:.2g} %"


LINK_ERRORS = ("crc_errors", "cobs_errors", "seq_gaps", "write_errors")


def _e2e_line(label, info):
    counters = info["loop_counters"]
    return (f"{label}: {info['acted_on_share'] * 100:.1f} % of samples acted on "
            f"individually, `process()` over 1 ms: {counters['deadline_misses']}, "
            f"{counters['dropped_late']} dropped late, link errors "
            f"{sum(info['link'][k] for k in LINK_ERRORS)}, device period median / p99 "
            f"{info['device_period']['median_us']:.0f} / "
            f"{info['device_period']['p99_us']:.0f} µs, its write call "
            f"{info['device_write_call']['median_us']:.1f} / "
            f"{info['device_write_call']['p99_us']:.1f} µs")


def format_report(results, args):
    lines = [
        f"n_hidden = {N_HIDDEN}, 3 inputs, horizon {HORIZON}, sgd; µs per sample, "
        f"median / p99 ({args.reps} samples per learner for (a) and (b), interleaved in "
        f"{args.rounds} rounds; for (c) {args.samples} samples at {args.rate:g} Hz in "
        f"{args.e2e_rounds} round(s), learners in rotating order, the first "
        f"{args.warmup} of each round not counted):", "",
        "| learner | (a) model step | (b) `process()` | (c) end to end | "
        "(b) − (a) loop overhead | (c) − (a) overhead | `process()` inside (c) |",
        "|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in results.items():
        a, b, c = r["model"], r["process"], r["e2e"]
        ob, oc = r["overhead_process"], r["overhead_e2e"]
        ph = r["e2e_info"]["process_histogram"]
        lines.append(f"| {label} | {a['median_us']:.1f} / {a['p99_us']:.1f} "
                     f"| {b['median_us']:.1f} / {b['p99_us']:.1f} "
                     f"| {c['median_us']:.1f} / {c['p99_us']:.1f} "
                     f"| {ob['median_us']:.1f} / {ob['p99_us']:.1f} "
                     f"| {oc['median_us']:.1f} / {oc['p99_us']:.1f} "
                     f"| {ph['median_us']:.0f} / {ph['p99_us']:.0f} |")
    lines += ["", "`process()` inside (c): the loop's own histogram of its `process()` "
              "calls during the end-to-end run (5 % bins, all samples), which include "
              "sending the command over the pty; in (b) the same calls run back to back "
              "with a no-op sink."]
    lines += ["", "Against the budgets: median and p99 as a share of the budget, and the "
              "share of samples over it (overheads: differences, no per-sample share):", "",
              "| learner | measure | 1 ms: median / p99 | over 1 ms | "
              "10 ms: median / p99 | over 10 ms |", "|---|---|---:|---:|---:|---:|"]
    names = (("model", "(a) model step"), ("process", "(b) process()"),
             ("e2e", "(c) end to end"), ("overhead_process", "(b) − (a)"),
             ("overhead_e2e", "(c) − (a)"))
    for label, r in results.items():
        for key, name in names:
            m = r[key]
            cells = []
            for b in BUDGETS_MS:
                v = m["budgets"][f"{b:g}ms"]
                cells.append(f"{_pct(v['median_fraction'])} / {_pct(v['p99_fraction'])}")
                cells.append(_pct(v["share_over"]) if "share_over" in v else "—")
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "End-to-end runs (a sample not acted on individually was taken in "
              "a backlog batch and answered by the batch's newest sample's command): "
              + "; ".join(_e2e_line(label, r["e2e_info"]) for label, r in results.items())
              + ".",
        "", "(c) per round, median / p99 µs: " + "; ".join(
            f"{label}: " + ", ".join(f"{m:.0f} / {q:.0f}" for m, q in zip(
                r["e2e_info"]["round_median_us"], r["e2e_info"]["round_p99_us"]))
            for label, r in results.items()) + "."]
    return "\n".join(lines)


def write_readme(text):
    intro = textwrap.fill(
        "Per sample at n_hidden = 32 (rtrl; snap1 and diag for contrast), 3 inputs, "
        "horizon 10: (a) the model's two calls alone, (b) `OnlineLoop.process` with "
        "a PI controller and a no-op sink, (c) end to end from a fake device thread "
        "writing SAMPLE frames to a pty at 1 kHz, through "
        "`SerialSource(SerialLink(pty))` and `OnlineLoop.run`, to the command frame "
        "read back on the pty master.  Against 1 ms and 10 ms budgets.  Details in "
        "the file's docstring.  Regenerate (about 40 s, most of it real time at "
        "1 kHz; writes `results/bench_loop.json` and the block below):", 79)
    common.write_block(BEGIN, END, text, "## `bench_loop.py` -- loop overhead and "
                       "end-to-end latency\n\n" + intro + "\n\n    " + COMMAND + "\n\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=None,
                   help="timed samples of (a) and (b) per learner (default 20000)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples of the end-to-end run per learner (default 10000)")
    p.add_argument("--warmup", type=int, default=None,
                   help="first end-to-end samples not counted (default 500)")
    p.add_argument("--rate", type=float, default=DEVICE_RATE_HZ,
                   help="device sample rate, Hz (default 1000)")
    p.add_argument("--learners", nargs="+", default=None,
                   choices=[label for label, _ in LEARNERS])
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds of (a), (b)")
    p.add_argument("--e2e-rounds", type=int, default=None,
                   help="rounds of (c), learners in rotating order (default 3, 1 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run, numbers not meaningful")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    args.reps = args.reps or (300 if args.quick else 20000)
    args.samples = args.samples or (300 if args.quick else 10000)
    args.warmup = args.warmup if args.warmup is not None else (50 if args.quick else 500)
    args.rounds = args.rounds or (2 if args.quick else 6)
    args.e2e_rounds = args.e2e_rounds or (1 if args.quick else 3)
    if args.rate <= 0 or args.reps < 1 or args.rounds < 1 or args.e2e_rounds < 1 \
            or args.samples < args.e2e_rounds or args.warmup < 0:
        p.error("--rate, --reps, --rounds, --e2e-rounds and --samples (at least one per "
                "round) must be positive, --warmup >= 0")
    if args.warmup + -(-args.samples // args.e2e_rounds) > MAX_SAMPLES:
        p.error(f"a round of (c) is limited to {MAX_SAMPLES} samples with its warm-up")
    rtrl_edge = common.import_library()
    env = common.environment(rtrl_edge)
    env["python_switch_interval_s"] = sys.getswitchinterval()
    env["loadavg_at_start"] = os.getloadavg()
    hello, raw, values = make_stream(max(args.warmup + args.samples,
                                         args.reps + 2000 + HORIZON + 1), args.rate)
    chosen = [(lb, kw) for lb, kw in LEARNERS if args.learners is None or lb in args.learners]
    results = {}
    t_start = time.perf_counter()
    for label, kw in chosen:
        t0 = time.perf_counter()
        a, b, ab_info = bench_model_and_process(rtrl_edge, kw, values, reps=args.reps,
                                                rounds=args.rounds, seed=args.seed)
        results[label] = dict(model=measure(a), process=measure(b), model_process_info=ab_info)
        print(f"  {label} (a), (b): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    # (c) in rounds, the learners in rotating order, so that slow drifts of the
    # machine's state hit them alike; each round a fresh pty, device and model
    per_round = -(-args.samples // args.e2e_rounds)
    n_round = args.warmup + per_round
    lats = {label: [] for label, _ in chosen}
    parts = {label: [] for label, _ in chosen}
    for r in range(args.e2e_rounds):
        order = chosen[r % len(chosen):] + chosen[:r % len(chosen)]
        for label, kw in order:
            t0 = time.perf_counter()
            lat, part = bench_e2e(rtrl_edge, kw, hello, raw[:n_round], values[:n_round],
                                  seed=args.seed, warmup=args.warmup, rate_hz=args.rate)
            lats[label].append(lat)
            parts[label].append(part)
            print(f"  {label} (c) round {r + 1}: {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
    for label, _ in chosen:
        res = results[label]
        res["e2e"] = measure(np.concatenate(lats[label]))
        res["e2e_info"] = pool_e2e(parts[label], lats[label], args.warmup)
        res["overhead_process"] = overhead(res["process"], res["model"])
        res["overhead_e2e"] = overhead(res["e2e"], res["model"])
        res["overhead_serial"] = overhead(res["e2e"], res["process"])
    elapsed = time.perf_counter() - t_start
    env["loadavg_at_end"] = os.getloadavg()
    text = (format_report(results, args) + f"\n\nRun time {elapsed:.0f} s.\n\n"
            "Environment: " + common.format_environment(env)
            + f"; Python switch interval {env['python_switch_interval_s'] * 1e3:g} ms; "
            "load average (1 min) at start / end "
            f"{env['loadavg_at_start'][0]:.2f} / {env['loadavg_at_end'][0]:.2f}")
    print(text)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_loop", quick=bool(args.quick),
                  command=" ".join([COMMAND, *given]), environment=env,
                  config=dict(n_hidden=N_HIDDEN, n_in=N_IN, n_out=1, horizon=HORIZON,
                              net=NET_KW, learners={lb: kw for lb, kw in chosen},
                              budgets_ms=list(BUDGETS_MS), device_rate_hz=args.rate,
                              reps=args.reps, e2e_samples=args.samples,
                              e2e_warmup_per_round=args.warmup, rounds=args.rounds,
                              e2e_rounds=args.e2e_rounds),
                  elapsed_s=elapsed, results=results)
    if not args.no_write:
        common.publish(result, text, JSON_PATH, write_readme)
    return result


if __name__ == "__main__":
    main()
