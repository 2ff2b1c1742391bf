"""Per-step latency and memory of every learner against n_hidden, in one run.

For each hidden size n (n_in = 8, n_out = 1, sgd) and each learner/cell, one
full learning step ``net.step(x, y)`` is timed call by call with
``time.perf_counter_ns`` (data built outside the timer, warm-up first); the
configurations of one size are interleaved in rounds so that machine noise
hits all alike.  Exact RTRL runs up to n = 128, the others up to 512.

Targets, reported as met or missed, never asserted:
  snap1, uoro and cell="diag" at n = 256: under 50 µs per step (issue 3);
  snap2 at density 0.1: at least 20x cheaper than rtrl at n = 64 (issue 3);
  cell="gru": exact RTRL at most 3.5x Elman's at every n measured, snap1 at
  n = 256 at most 3x Elman's snap1 (issue 13; ratios of medians of the same
  interleaved run).

Against what the hardware does with the same weights (issue 15): numpy's
bare forward pass of the same shape (``W @ z``, tanh, the readout; z filled
from x, no learning) interleaved with the learners' sgd and Adam steps, at
n_in = 8, n = 256, n_out = 1 and at the respiratory protocol's width
(n_in = 540, n = 128, n_out = 9).  Targets, as ratios of medians of one run:
snap1, uoro and diag at most 2x the forward pass at n = 256; snap1 and uoro
at most 2.5x at the protocol's width; Adam at most 1.2x the same learner's
sgd step.  Both shapes have more than 65,536 parameters, where ``threads=2``
splits the Elman cell's passes over two cores: that sgd step is timed in the
same rounds (the targets are on one core).

    pip install ".[bench]" && python benchmarks/bench_learners.py
    python benchmarks/bench_learners.py --quick --no-write     # smoke run

Writes results/bench_learners.json, results/bench_learners.png and the block
between the bench_learners markers in benchmarks/README.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_step as common  # noqa: E402  (sets the BLAS thread variables first)

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = common.HERE
JSON_PATH = os.path.join(common.RESULTS_DIR, "bench_learners.json")
PNG_PATH = os.path.join(common.RESULTS_DIR, "bench_learners.png")
BEGIN, END = "<!-- bench_learners:begin -->", "<!-- bench_learners:end -->"
N_IN, N_OUT = 8, 1

#: (label, constructor keywords, largest n_hidden)
CONFIGS = (
    ("rtrl", dict(learner="rtrl"), 128),
    ("snap2 d=0.1", dict(learner="snap2", rec_density=0.1), 512),
    ("snap1", dict(learner="snap1"), 512),
    ("uoro", dict(learner="uoro"), 512),
    ("tbptt k=16", dict(learner="tbptt", window=16), 512),
    ("diag (rtrl)", dict(cell="diag"), 512),
    ("gru rtrl", dict(cell="gru", learner="rtrl"), 128),
    ("gru snap2 d=0.1", dict(cell="gru", learner="snap2", rec_density=0.1), 512),
    ("gru snap1", dict(cell="gru", learner="snap1"), 512),
    ("gru uoro", dict(cell="gru", learner="uoro"), 512),
    ("gru tbptt k=16", dict(cell="gru", learner="tbptt", window=16), 512),
)
CONFIGS_BY_LABEL = {label: kw for label, kw, _ in CONFIGS}
SIZES = (8, 16, 32, 64, 128, 256, 512)
#: the GRU's targets (issue 13): (GRU row, Elman row, sizes, at most this ratio)
GRU_TARGETS = (("gru rtrl", "rtrl", SIZES, 3.5), ("gru snap1", "snap1", (256,), 3.0))


def _reps(net, xs, ys, quick):
    """Enough calls for about 0.3 s per configuration (0.03 s with --quick)."""
    t0 = time.perf_counter()
    common.time_calls(net.step, xs, ys, 0, 10, np.zeros(10, np.int64), 0)
    per = (time.perf_counter() - t0) / 10
    budget = 0.03 if quick else 0.3
    return int(min(20000 if not quick else 200, max(50 if quick else 300, budget / per)))


def bench_size(rtrl_edge, n, *, quick, rounds, seed):
    nets = {label: rtrl_edge.OnlineRNN(N_IN, n, N_OUT, optimizer="sgd", lr=1e-3,
                                       seed=seed, **kw)
            for label, kw, top in CONFIGS if n <= top}
    xs, ys = common.make_data(20, seed + 1)
    reps = {label: _reps(net, xs, ys, quick) for label, net in nets.items()}
    block = {label: max(1, r // rounds) for label, r in reps.items()}
    data = common.make_data(max(block.values()) * rounds, seed + 2)
    samples = {label: np.zeros(block[label] * rounds, np.int64) for label in nets}
    labels = list(nets)
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            common.time_calls(nets[label].step, *data, r * block[label], block[label],
                              samples[label], r * block[label])
    return {label: dict(common.summarize(samples[label]),
                        memory_bytes=int(nets[label].memory_bytes))
            for label in labels}


#: issue 15's shapes (n_in, n_hidden, n_out), who is measured there, and the bound on
#: each learner's sgd step over numpy's forward pass
PASS_SHAPES = (((8, 256, 1), ("snap1", "uoro", "diag (rtrl)"), 2.0),
               ((540, 128, 9), ("snap1", "uoro"), 2.5))
ADAM_BOUND = 1.2
FORWARD = "numpy forward"
THREADS = 2          # the split passes' row (rtrl_edge's threads=2; targets are per core)


class NumpyForward:
    """numpy's bare forward pass of an Elman step of the same shape: z filled
    from x, h = tanh(W @ z), y = W_out @ h + b_out; no learning.  Called as
    net.step is, (x, y)."""

    def __init__(self, n_in, n, n_out, seed):
        rng = np.random.default_rng(seed)
        K = n + n_in + 1
        self.W = (0.1 * rng.standard_normal((n, K))).astype(np.float32)
        self.W_out = (0.1 * rng.standard_normal((n_out, n))).astype(np.float32)
        self.b_out = np.zeros(n_out, np.float32)
        self.z = np.zeros(K, np.float32)
        self.z[-1] = 1.0
        self.h = np.zeros(n, np.float32)
        self.y = np.zeros(n_out, np.float32)
        self.n, self.n_in = n, n_in

    def step(self, x, _y):
        z, h = self.z, self.h
        z[:self.n] = h
        z[self.n:self.n + self.n_in] = x
        np.dot(self.W, z, out=h)
        np.tanh(h, out=h)
        np.dot(self.W_out, h, out=self.y)
        self.y += self.b_out


def bench_passes(rtrl_edge, *, quick, rounds, seed):
    """Each shape of PASS_SHAPES: numpy's forward pass and every learner's sgd
    and Adam steps, interleaved in rounds; {shape: {label: summary}}."""
    out = {}
    for (m, n, o), learners, _ in PASS_SHAPES:
        rng = np.random.default_rng(seed + 5)
        steps = 20
        xs = list(rng.standard_normal((steps, m)).astype(np.float32))
        ys = list((0.5 * rng.standard_normal((steps, o))).astype(np.float32))
        calls = {FORWARD: NumpyForward(m, n, o, seed).step}
        for label in learners:
            kw = dict(CONFIGS_BY_LABEL[label])
            for opt in ("sgd", "adam"):
                net = rtrl_edge.OnlineRNN(m, n, o, optimizer=opt, lr=1e-3, clip=1.0,
                                          seed=seed, **kw)
                calls[f"{label} {opt}"] = net.step
            if kw.get("cell", "elman") == "elman":
                # the same sgd step with its O(n K) passes split over two cores
                net = rtrl_edge.OnlineRNN(m, n, o, optimizer="sgd", lr=1e-3, clip=1.0,
                                          seed=seed, threads=THREADS, **kw)
                calls[f"{label} sgd threads={THREADS}"] = net.step
        reps = 100 if quick else 3000
        block = max(1, reps // rounds)
        data_x = [xs[i % steps] for i in range(block * rounds + 20)]
        data_y = [ys[i % steps] for i in range(block * rounds + 20)]
        samples = {k: np.zeros(block * rounds, np.int64) for k in calls}
        labels = list(calls)
        for k in labels:                                      # warm-up
            common.time_calls(calls[k], data_x, data_y, 0, 20, np.zeros(20, np.int64), 0)
        for r in range(rounds):
            for k in labels[r % len(labels):] + labels[:r % len(labels)]:
                common.time_calls(calls[k], data_x, data_y, 20 + r * block, block,
                                  samples[k], r * block)
        out[f"{m},{n},{o}"] = {k: common.summarize(v) for k, v in samples.items()}
    return out


def pass_targets(passes):
    """Issue 15's targets from `bench_passes`: ratios of medians of one run."""
    out = []
    for (m, n, o), learners, bound in PASS_SHAPES:
        row = passes.get(f"{m},{n},{o}")
        if row is None:
            continue
        fwd = row[FORWARD]["median_us"]
        for label in learners:
            ratio = row[f"{label} sgd"]["median_us"] / fwd
            out.append(dict(text=f"{label} sgd at n_in={m}, n={n}, n_out={o} at most "
                                 f"{bound:g}x numpy's forward pass ({fwd:.1f} µs)",
                            value=ratio, unit="x ratio",
                            status="met" if ratio <= bound else "missed"))
            adam = row[f"{label} adam"]["median_us"] / row[f"{label} sgd"]["median_us"]
            out.append(dict(text=f"{label} Adam at most {ADAM_BOUND:g}x its sgd step "
                                 f"(n_in={m}, n={n})", value=adam, unit="x ratio",
                            status="met" if adam <= ADAM_BOUND else "missed"))
    return out


def format_passes(passes):
    lines = []
    for shape, row in passes.items():
        fwd = row[FORWARD]["median_us"]
        lines.append(f"n_in, n_hidden, n_out = {shape}: µs per call, median / p99, and "
                     f"the median over numpy's forward pass\n")
        lines.append("| | median / p99 µs | over the forward pass |")
        lines.append("|---|---:|---:|")
        for k, v in row.items():
            lines.append(f"| {k} | {v['median_us']:.1f} / {v['p99_us']:.1f} | "
                         f"{v['median_us'] / fwd:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def evaluate_targets(results):
    def med(label, n):
        return results.get(str(n), {}).get(label, {}).get("median_us")
    out = []
    for label in ("snap1", "uoro", "diag (rtrl)"):
        value = med(label, 256)
        out.append(dict(text=f"{label} at n=256 under 50 µs per step", value=value,
                        unit="µs", status="not measured" if value is None
                        else "met" if value < 50 else "missed"))
    r, s = med("rtrl", 64), med("snap2 d=0.1", 64)
    ratio = None if r is None or s is None else r / s
    out.append(dict(text="snap2 (density 0.1) at least 20x cheaper than rtrl at n=64",
                    value=ratio, unit="x", status="not measured" if ratio is None
                    else "met" if ratio >= 20 else "missed"))
    for gru, elman, sizes, bound in GRU_TARGETS:
        ratios = {n: med(gru, n) / med(elman, n) for n in sizes
                  if med(gru, n) is not None and med(elman, n) is not None}
        worst = max(ratios, key=ratios.get) if ratios else None
        where = "" if worst is None else (
            f" (worst at n={worst}; " + ", ".join(f"{r:.2f}x at n={n}"
                                                  for n, r in ratios.items()) + ")")
        out.append(dict(text=f"{gru} at most {bound:g}x {elman} per step at the same n"
                        + where, value=None if worst is None else ratios[worst],
                        unit="x ratio", status="not measured" if worst is None
                        else "met" if ratios[worst] <= bound else "missed"))
    return out


def format_tables(results, sizes):
    labels = [label for label, _, _ in CONFIGS]
    head = "| learner | " + " | ".join(f"n={n}" for n in sizes) + " |"
    sep = "|---|" + "---:|" * len(sizes)
    lat, mem = [head, sep], [head, sep]
    for label in labels:
        cells_t, cells_m = [], []
        for n in sizes:
            row = results[str(n)].get(label)
            cells_t.append("—" if row is None else
                           f"{row['median_us']:.3g} / {row['p99_us']:.3g}")
            cells_m.append("—" if row is None else f"{row['memory_bytes'] / 1024:,.1f}")
        lat.append(f"| {label} | " + " | ".join(cells_t) + " |")
        mem.append(f"| {label} | " + " | ".join(cells_m) + " |")
    return ("µs per learning step, median / p99 (n_in = 8, n_out = 1, sgd):\n\n"
            + "\n".join(lat) + "\n\n`memory_bytes`, KiB:\n\n" + "\n".join(mem))


def format_targets(targets):
    lines = []
    for t in targets:
        value = "—" if t["value"] is None else (
            f"{t['value']:.1f} µs" if t["unit"] == "µs"
            else f"{t['value']:.2f}x" if t["unit"] == "x ratio" else f"{t['value']:.1f}x")
        mark = {"met": "**met**", "missed": "**MISSED**"}.get(t["status"], t["status"])
        lines.append(f"- {t['text']}: {value} -- {mark}")
    return "\n".join(lines)


def write_plot(results, sizes, env):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.6))
    for label, _, _ in CONFIGS:
        ns = [n for n in sizes if label in results[str(n)]]
        med = np.array([results[str(n)][label]["median_us"] for n in ns])
        p99 = np.array([results[str(n)][label]["p99_us"] for n in ns])
        mem = np.array([results[str(n)][label]["memory_bytes"] for n in ns]) / 1024
        line, = ax_t.plot(ns, med, "o-", label=label)
        ax_t.fill_between(ns, med, p99, color=line.get_color(), alpha=0.15, linewidth=0)
        ax_m.plot(ns, mem, "o-", color=line.get_color(), label=label)
    for ax, ylabel in ((ax_t, "µs per learning step (median; band to p99)"),
                       (ax_m, "memory_bytes (KiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(sizes))
        ax.set_xticklabels([str(n) for n in sizes])
        ax.set_xlabel("n_hidden (n_in = 8, n_out = 1)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax_t.legend(fontsize=8)
    fig.suptitle(f"Every learner, one thread, sgd — {env['cpu_model']}, {env['date'][:10]}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=110)
    plt.close(fig)
    return PNG_PATH


def write_readme(text):
    common.write_block(BEGIN, END, text,
                       "## `bench_learners.py` -- every learner against n_hidden\n\n"
                       "One learning step (sgd) of each learner and cell, n_in = 8, n_out = 1, "
                       "the configurations of one size interleaved in rounds. Regenerate:\n\n"
                       "    pip install \".[bench]\" && python benchmarks/bench_learners.py\n\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N")
    p.add_argument("--quick", action="store_true", help="smoke run, numbers not meaningful")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    rtrl_edge = common.import_library()
    env = common.environment(rtrl_edge)
    results = {}
    for n in args.sizes:
        t0 = time.perf_counter()
        results[str(n)] = bench_size(rtrl_edge, n, quick=args.quick, rounds=rounds,
                                     seed=args.seed)
        print(f"  n={n}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    t0 = time.perf_counter()
    passes = bench_passes(rtrl_edge, quick=args.quick, rounds=rounds, seed=args.seed)
    print(f"  against numpy's forward pass: done in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    targets = evaluate_targets(results) + pass_targets(passes)
    text = (format_tables(results, args.sizes)
            + "\n\nAgainst numpy's bare forward pass of the same shape (W @ z, tanh, "
              "readout), sgd and Adam, interleaved in one run:\n\n" + format_passes(passes)
            + "\nTargets:\n" + format_targets(targets)
            + "\n\nEnvironment: " + common.format_environment(env))
    print(text)
    if not args.no_write:
        given = list(argv) if argv is not None else sys.argv[1:]
        result = dict(benchmark="bench_learners", quick=args.quick,
                      command=" ".join(["python benchmarks/bench_learners.py", *given]),
                      environment=env, results=results, passes=passes, targets=targets)
        common.publish(result, text, JSON_PATH, write_readme, plot=lambda: write_plot(results, args.sizes, env),
                       alt="latency and memory of every learner")
    return dict(results=results, passes=passes, targets=targets)


if __name__ == "__main__":
    main()
