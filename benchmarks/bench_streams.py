"""Many streams in one process: samples per second per core and the latency
of each sample, against the number of streams, for the models a Pi would
run per sensor.

Setup, as ``rtrl-edge run --replay ... --split-channels`` builds it: one
board of N sensors, read as one source of N channels; one stream per
channel, each with its own model forecasting its channel 10 samples ahead
from itself (``Forecaster(OnlineRNN(1, n, 1, ...), 10, delta=True)``, or
``Forecaster.auto(1, 1, 10)``), all served by one ``MultiLoop`` on one
thread.  The N channels are the 27 coordinate series of the 9 shipped and
benchmark respiration sessions (cycled when N > 27), each its own sensor.

Measured per model and N, over a fixed number of rows (every stream
processes every row):

- **samples/s per core**: samples processed (rows x N) over the CPU time of
  the process (``time.process_time``, so other jobs on the machine do not
  count) -- and over wall time beside it;
- **per sample**: the loop's own latency histogram of every sample of every
  stream (``OnlineLoop.process``: validation, forecast and learning,
  scoring), median and p99, at its 5 % bin resolution;
- **per row**: the time from one row's read to the next -- every stream
  served once, what a board's sample waits for -- median and p99 from
  ``time.perf_counter_ns``;
- **memory**: ``MultiLoop.memory_bytes``, checked equal to the sum of the
  same models built alone (exact, not sampled).

The "+ MQTT" rows add what ``--mqtt`` adds: every forecast of every stream
published (JSON, QoS 0) to a Mosquitto that the benchmark starts on a free
loopback port (Debian ``mosquitto``; paho-mqtt, ``pip install '.[mqtt]'``);
skipped, saying so, without either.  The broker runs on the same two cores,
so the wall-clock figures there include its share.

    python benchmarks/bench_streams.py            # about 4 minutes on one core
    python benchmarks/bench_streams.py --quick --no-write

This is a benchmark, not a test: nothing asserts on timing.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import extmarker as em  # noqa: E402

JSON_PATH = os.path.join(common.RESULTS_DIR, "bench_streams.json")
PNG_PATH = os.path.join(common.RESULTS_DIR, "bench_streams.png")
BEGIN, END = "<!-- bench_streams:begin -->", "<!-- bench_streams:end -->"
SECTION = ("## `bench_streams.py` -- many streams in one process\n\n"
           "One board of N sensors split into N streams, one model each, served by one "
           "thread (`rtrl-edge run --split-channels`); see the script's docstring.\n\n")
HORIZON = 10
#: name -> (what, builder of one stream's forecaster)
MODELS = {
    "rtrl n=16": "exact RTRL, 16 units, sgd",
    "snap1 n=32": "SnAp-1, 32 units, sgd",
    "auto": "Forecaster.auto: the untuned mixture (run's default)",
    "rtrl n=16 + MQTT": "exact RTRL, 16 units, every forecast published over MQTT",
}
STREAMS = (1, 4, 16, 64)


def make_forecaster(name, seed):
    from rtrl_edge import OnlineRNN
    from rtrl_edge.forecast import Forecaster
    name = name.replace(" + MQTT", "")
    if name == "auto":
        return Forecaster.auto(1, 1, HORIZON, seed=seed)
    learner, n = name.split(" n=")
    net = OnlineRNN(1, int(n), 1, learner=learner, optimizer="sgd", lr=1e-3, clip=1.0,
                    normalize=True, seed=seed)
    return Forecaster(net, HORIZON, delta=True)


def sensors(n_streams, rows):
    """(rows, n_streams): each column one coordinate series of a session."""
    series = [s.xyz[:, k] for s in em.load_sessions() for k in range(3)]
    cols = [np.resize(series[i % len(series)], rows) for i in range(n_streams)]
    return np.stack(cols, axis=1)


class _TimedRows:
    """A replay whose reads are timestamped: the gap between two reads is
    the time every stream took on one row."""

    def __init__(self, source):
        self.source, self.stamps, self.n = source, None, 0
        self.channels, self.rate_hz = source.channels, None

    def read(self):
        self.stamps[self.n] = time.perf_counter_ns()
        self.n += 1
        return self.source.read()

    exhausted = property(lambda self: self.source.exhausted)


class _Broker:
    """A Mosquitto on a free loopback port, for the "+ MQTT" rows."""

    def __init__(self):
        import pwd
        import shutil
        import socket
        import subprocess
        import tempfile
        binary = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin")
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.TemporaryDirectory()
        conf = os.path.join(self.dir.name, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    f"persistence false\nuser {pwd.getpwuid(os.getuid()).pw_name}\n")
        self.proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.01)

    def close(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.dir.cleanup()


def measure(name, n_streams, rows):
    from rtrl_edge.adapters import ReplaySource
    from rtrl_edge.loop import OnlineLoop
    source = _TimedRows(ReplaySource(sensors(n_streams, rows)))
    source.stamps = np.zeros(rows + 2, dtype=np.int64)
    loops = {f"s{c}": OnlineLoop(make_forecaster(name, c), source, inputs=[c], targets=(c,))
             for c in range(n_streams)}
    if name.endswith(" + MQTT"):
        with _mqtt(loops) as link:
            out = _measure(name, n_streams, rows, source, loops)
            out["mqtt"] = link.stats()
        return out
    return _measure(name, n_streams, rows, source, loops)


class _mqtt:
    """Publish every loop's forecasts through a link to a fresh broker."""

    def __init__(self, loops):
        self.loops = loops

    def __enter__(self):
        from rtrl_edge.adapters.mqtt import MqttLink
        from rtrl_edge.cli._loop_setup import forecast_publisher
        self.broker = _Broker()
        self.link = MqttLink(f"mqtt://127.0.0.1:{self.broker.port}/bench", queue=100000)
        self.link.start()
        for name, loop in self.loops.items():
            loop.on_forecast = forecast_publisher(self.link, loop, stream=name)
        return self.link

    def __exit__(self, *exc):
        self.link.close()
        self.broker.close()


def _measure(name, n_streams, rows, source, loops):
    from rtrl_edge.streams import MultiLoop
    multi = MultiLoop(loops)
    alone = sum(make_forecaster(name, c).memory_bytes for c in range(n_streams))
    cpu, wall = time.process_time(), time.perf_counter()
    summary = multi.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    per_row = np.diff(source.stamps[:rows + 1]) / 1e3          # us, one row each
    samples = summary["samples"]
    return dict(model=name, streams=n_streams, rows=rows, samples=samples,
                samples_per_cpu_s=samples / cpu, samples_per_wall_s=samples / wall,
                sample_median_us=summary["latency"]["median_us"],
                sample_p99_us=summary["latency"]["p99_us"],
                row_median_us=float(np.median(per_row)),
                row_p99_us=float(np.percentile(per_row, 99)),
                memory_bytes=summary["memory_bytes"], memory_exact=summary["memory_bytes"]
                == alone, beating_last_value=summary["streams_beating_last_value"])


def format_table(rows):
    lines = ["| model | streams | samples/s per core | (wall) | per sample median / p99 (µs) "
             "| per row median / p99 (µs) | memory_bytes (sum of the models) | streams "
             "beating last value |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['streams']} | {r['samples_per_cpu_s']:,.0f} | "
            f"{r['samples_per_wall_s']:,.0f} | {r['sample_median_us']:.1f} / "
            f"{r['sample_p99_us']:.1f} | {r['row_median_us']:,.1f} / {r['row_p99_us']:,.1f} "
            f"| {r['memory_bytes']:,}{'' if r['memory_exact'] else ' (NOT the sum!)'} | "
            f"{r['beating_last_value']}/{r['streams']} |")
    return "\n".join(lines)


def readout(rows):
    """What the table says, in sentences, from the numbers."""
    out = []
    for name in MODELS:
        mine = [r for r in rows if r["model"] == name]
        if len(mine) < 2:
            continue
        a, b = mine[0], mine[-1]
        out.append(f"- {name}: {a['streams']} stream(s) {a['samples_per_cpu_s']:,.0f} "
                   f"samples/s per core, {b['streams']} streams "
                   f"{b['samples_per_cpu_s']:,.0f} ({b['samples_per_cpu_s'] / a['samples_per_cpu_s']:.2f}x); "
                   f"at 10 Hz per sensor one core serves about "
                   f"{b['samples_per_cpu_s'] / 10:,.0f} such sensors.")
    exact = all(r["memory_exact"] for r in rows)
    out.append("- memory_bytes equals the sum of the same models built alone in every row: "
               + ("yes" if exact else "NO"))
    return "\n".join(out)


def write_plot(rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in MODELS:
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        n = [r["streams"] for r in mine]
        (line,) = a.plot(n, [r["samples_per_cpu_s"] for r in mine], "o-", label=name)
        b.plot(n, [r["row_median_us"] / 1e3 for r in mine], "o-", color=line.get_color(),
               label=f"{name} median")
        b.plot(n, [r["row_p99_us"] / 1e3 for r in mine], "x--", color=line.get_color(),
               alpha=0.5, label=f"{name} p99")
    a.set(xscale="log", yscale="log", xlabel="streams in one process",
          ylabel="samples/s per core")
    b.set(xscale="log", yscale="log", xlabel="streams in one process",
          ylabel="ms to serve every stream once (one row)")
    a.legend(fontsize=8)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=110)
    plt.close(fig)
    return PNG_PATH


def _can_mqtt() -> bool:
    """Whether the "+ MQTT" rows can run here (saying why not if they cannot)."""
    import importlib.util
    import shutil
    why = ("paho-mqtt is not installed (pip install '.[mqtt]')"
           if importlib.util.find_spec("paho") is None else
           "mosquitto is not installed (apt-get install mosquitto)"
           if shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin") is None
           else None)
    if why:
        print(f"  skipping the + MQTT rows: {why}", file=sys.stderr)
    return why is None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, nargs="+", default=list(STREAMS), metavar="N")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--rows", type=int, default=None,
                   help="rows per run (default 1000; 100 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 100 rows, N = 1, 4")
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON, plot or README block")
    args = p.parse_args(argv)
    if args.quick and args.streams == list(STREAMS):
        args.streams = [1, 4]
    rows_n = args.rows or (100 if args.quick else 1000)
    if rows_n < 2 or any(n < 1 for n in args.streams):
        p.error("--rows must be >= 2 and --streams >= 1")
    rtrl_edge = common.import_library()
    env = common.environment(rtrl_edge)
    t0 = time.perf_counter()
    rows = []
    for name in args.models:
        if name.endswith(" + MQTT") and not _can_mqtt():
            continue
        for n in args.streams:
            rows.append(measure(name, n, rows_n))
            print(f"  {name}, {n} streams: {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_streams", quick=bool(args.quick),
                  command=" ".join(["python benchmarks/bench_streams.py", *given]),
                  environment=env, horizon=HORIZON, models=MODELS, rows=rows,
                  elapsed_s=time.perf_counter() - t0)
    text = "\n\n".join([
        f"{common.format_environment(env)}; {rows_n} rows per run, horizon {HORIZON}"
        + (" (quick: indicative only)" if args.quick else "") + ".",
        format_table(rows), readout(rows)])
    print(text)
    if not args.no_write:
        common.publish(result, text, JSON_PATH,
                       lambda t: common.write_block(BEGIN, END, t, SECTION),
                       plot=lambda: write_plot(rows),
                       alt="samples per second per core and time per row against the "
                           "number of streams")
    return result


if __name__ == "__main__":
    main()
