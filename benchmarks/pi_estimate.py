"""ESTIMATED cost of one learning step of every learner on a Raspberry Pi 4
and a Raspberry Pi 5: counted work and assumed hardware figures, not a
measurement on a Pi.

For each configuration (learner, n_in, n_hidden, n_out; sgd, one thread):

Counts (exact, from the library itself)
    macs   = rtrl_edge.planning.work(...)         multiply-adds (and comparable
                                                  element operations) per step
    FLOP   = 2 * macs                             one multiply-add = 2 FLOP
    memory = rtrl_edge.planning.memory_bytes(...) every allocated buffer

Bytes moved per step (an estimate, from the buffers of rtrl_edge._layout)
    Every buffer of the layout is charged its size once per pass that reads
    or writes it during one step:

    learner state  P (rtrl), J (snap1), P_blocks (snap2), traces (diag):
                   read once + written once                         2 passes
                   uoro_theta: read for its norm, then read + written
                   with the gradient row in the same pass           3 passes
                   ring_z, ring_d (tbptt): read once by the backward
                   pass (one slot written)                          1 pass
    tbptt extra    per step back (window of them), the cell gradient is
                   read + written (2 * n * K) and W_rec is read (n * n)
    theta          forward read, optimiser read + write (the
                   finiteness check sums in the same pass)          3 passes
    grad           written by the learner, read by the norm for
                   clipping, read by the update                     3 passes
                   (snap1, uoro and tbptt, Elman: the norm is
                   summed as the learner writes it)                 2 passes
    good           the last good parameters, copied once per 64
                   updates                                          not charged
    everything else (h, z, dphi, c, normaliser statistics, snap2 index
                   sets, ...)                                       1 pass
    not charged    the scratch of the blocked product (rtrl: the packed
                   slice of P, snap2: tmp, wsub) and the re-reads of W_rec
                   per column tile: they stay in L1/L2 by construction;
                   the JSON lists them
    All passes are charged at the level the whole working set fits in, an
    upper bound when one buffer alone would fit a lower level between two
    consecutive passes over it.

Time model, per board and per step
    t_compute = FLOP / (efficiency * peak single-core FP32 FLOP/s)
                peak = clock * FLOP/cycle; the vector rate (128-bit NEON
                FMA) for the learners whose kernels are the SIMD product or
                SIMD row passes (rtrl, snap2, snap1, uoro, tbptt), the
                scalar FMA rate for cell="diag" (plain C loops with exp,
                sin, cos per pair)
    t_memory  = bytes moved / bandwidth of the level memory_bytes fits in
                (L1, L2, L3 or DRAM; effective bandwidths assumed per level)
    estimate  = max(t_compute, t_memory) + overhead
                overhead = median of net.step for OnlineRNN(1, 1, 1) measured
                on THIS machine, times an assumed Pi/this-machine ratio for
                single-thread interpreter-bound code
    range     optimistic: efficiency 60 % (85 % for exact RTRL's blocked
              product), the higher bandwidth and clock (Pi 4: a 1.8 GHz
              board), the lower overhead ratio;
              pessimistic: efficiency 25 % (40 % for the product), the
              lower bandwidth and clock (Pi 4: a 1.5 GHz board), the higher
              overhead ratio.  The product's shares are refitted to what it
              does here (PRODUCT_EFFICIENCY).
    max rate  at a 50 % CPU budget: 0.5 / estimate; the tables show the
              pessimistic end, the JSON both.

Honesty check: the same model, with this machine's clock, vector width and
caches, predicts the medians stored in results/bench_learners.json; the
ratio measured / estimated is reported per configuration.

    python benchmarks/pi_estimate.py              # writes JSON, PNG, README block
    python benchmarks/pi_estimate.py --no-write   # print only
    python benchmarks/pi_estimate.py --quick --no-write   # smoke run

Writes results/pi_estimate.json, results/pi_estimate.png (if matplotlib is
installed) and the block between the pi_estimate markers in
benchmarks/README.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_step as common  # noqa: E402  (sets the BLAS thread variables first)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = common.HERE
JSON_PATH = os.path.join(common.RESULTS_DIR, "pi_estimate.json")
PNG_PATH = os.path.join(common.RESULTS_DIR, "pi_estimate.png")
LEARNERS_JSON = os.path.join(common.RESULTS_DIR, "bench_learners.json")
BEGIN, END = "<!-- pi_estimate:begin -->", "<!-- pi_estimate:end -->"

KIB, MIB = 1024, 1024 * 1024
N_IN, N_OUT = 8, 1
SIZES = (8, 16, 32, 64, 128, 256, 512)
TILE = 16                   # columns of P per tile of the product on NEON (4 x 4 floats)
#: the respiratory benchmark: 12 past samples x 9 coordinates in, 9 out
RESP_IN, RESP_OUT, RESP_SIZES = 108, 9, (32, 64)
WINDOW, DENSITY = 16, 0.1

#: (label as in bench_learners.py, learner, cell, kernel kind, largest n_hidden)
CONFIGS = (
    ("rtrl", "rtrl", "elman", "product", 128),
    ("snap2 d=0.1", "snap2", "elman", "vector", 512),
    ("snap1", "snap1", "elman", "vector", 512),
    ("uoro", "uoro", "elman", "vector", 512),
    ("tbptt k=16", "tbptt", "elman", "vector", 512),
    ("diag (rtrl)", "rtrl", "diag", "scalar", 512),
)

#: fraction of peak reached, (optimistic, pessimistic): the row passes and
#: plain loops ("vector", "scalar")
EFFICIENCY = (0.60, 0.25)
#: and the register-blocked n^4 product of exact RTRL ("product"), refitted to
#: the packed kernel: on the development machine its AVX2 step runs the n^4
#: term at 87-89 % of the measured FMA peak at the 1st percentile (67 % at the
#: median, on a shared host), and the portable 4-wide build (what NEON runs)
#: at 42-44 % of the 4-wide peak (bench_step.py)
PRODUCT_EFFICIENCY = (0.85, 0.40)
#: control loops the summary speaks of, Hz
LOOP_RATES = (100, 1000)
#: share of one core the learner may use
CPU_BUDGET = 0.5

# --------------------------------------------------------------------------
# hardware figures: value, where it comes from, and whether a search of
# stored public sources confirmed it ("confirmed") or it is a spec sheet
# figure ("spec") or an assumption ("assumed")
# --------------------------------------------------------------------------

BOARDS = {
    "pi4": dict(
        name="Raspberry Pi 4", soc="BCM2711", core="Cortex-A72",
        clock_ghz=(1.8, 1.5),
        vector_flop_per_cycle=8, scalar_flop_per_cycle=4,
        caches=(("L1", 32 * KIB), ("L2", 1 * MIB)),
        # effective bytes (read + written) per cycle for L1/L2, GB/s for DRAM
        cache_bytes_per_cycle={"L1": (16, 8), "L2": (8, 5)},
        dram_gbs=(5.5, 4.8),
        overhead_ratio=(5.0, 8.0),
        facts=[
            ("cores, clock", "4x Cortex-A72, 1.5 GHz (1.8 GHz on boards from 2020 on)",
             "Raspberry Pi 4 Model B product brief", "spec"),
            ("caches", "32 KiB L1d per core, 1 MiB shared L2",
             "Raspberry Pi documentation, BCM2711 page", "spec"),
            ("DRAM", "LPDDR4-3200", "Raspberry Pi 4 Model B product brief", "spec"),
            ("FP32 FMA per cycle", "one 128-bit FMLA (2 x 64-bit FP/NEON pipes): "
             "8 FLOP/cycle vector, 4 FLOP/cycle scalar (two scalar FMAs)",
             "vfpbench on a 2.0 GHz Cortex-A72 (MT8173C; wlog.flatlib.jp, 2015): "
             "15.9 GFLOPS single-thread SP = 7.9 FLOP/cycle, read there as two 64-bit "
             "pipes that also dual-issue scalar FP (the scalar FMA rate is inferred "
             "from that note)", "confirmed (vector), assumed (scalar)"),
            ("DRAM bandwidth, one core", "5.5 GB/s (STREAM Copy), 4.8 GB/s (Triad)",
             "STREAM (stream.c, gcc -O3, one thread) on a Pi 4, sci-pi.org.uk/bench/stream.html; "
             "tinymembench C copy 2.8 GB/s (x2 = read + write) on the 1.25 GHz Pi 4 "
             "edition, github.com/geerlingguy/sbc-reviews issue 110", "confirmed"),
            ("L1 / L2 bandwidth", "L1 16 (8) B/cycle, L2 8 (5) B/cycle, read + write",
             "from the core's one load and one store pipe; no sustained L1/L2 "
             "figure found", "assumed"),
            ("interpreter speed vs this machine", "5x (1.8 GHz) to 8x (1.5 GHz) slower",
             "not found; Pi 5 / Pi 4 single-thread ~1.9-2.3x (sysbench, "
             "leoncode.co.uk, zbotic.in) is consistent with the two ratios", "assumed"),
        ],
    ),
    "pi5": dict(
        name="Raspberry Pi 5", soc="BCM2712", core="Cortex-A76",
        clock_ghz=(2.4, 2.4),
        vector_flop_per_cycle=16, scalar_flop_per_cycle=4,
        caches=(("L1", 64 * KIB), ("L2", 512 * KIB), ("L3", 2 * MIB)),
        cache_bytes_per_cycle={"L1": (32, 16), "L2": (16, 8), "L3": (8, 5)},
        dram_gbs=(12.3, 11.1),
        overhead_ratio=(2.0, 3.5),
        facts=[
            ("cores, clock", "4x Cortex-A76, 2.4 GHz",
             "Raspberry Pi 5 product brief", "spec"),
            ("caches", "64 KiB L1d and 512 KiB L2 per core, 2 MiB shared L3",
             "Raspberry Pi documentation, BCM2712 page", "spec"),
            ("DRAM", "LPDDR4X-4267", "Raspberry Pi 5 product brief", "spec"),
            ("FP32 FMA per cycle", "two 128-bit FMLA: 16 FLOP/cycle vector, "
             "4 FLOP/cycle scalar",
             "LLVM scheduling model of the Neoverse N1 (derived from the A76; "
             "AArch64SchedNeoverseN1.td, after the Arm Neoverse N1 Software "
             "Optimization Guide): ASIMD FP multiply-accumulate issues to either "
             "of the two FP/ASIMD pipes V0/V1; AnandTech's Cortex-A76 "
             "microarchitecture article: two ASIMD/FP pipelines; scalar rate "
             "not looked up", "confirmed (vector), assumed (scalar)"),
            ("DRAM bandwidth, one core", "12.3 (11.1) GB/s read + write",
             "tinymembench C copy 6.2 GB/s on a 4 GB board, 5.6 GB/s on an 8 GB "
             "board (x2 = read + write): github.com/geerlingguy/sbc-reviews issue 21, "
             "github.com/raspberrypi/firmware issue 1876", "confirmed"),
            ("L1 / L2 / L3 bandwidth", "L1 32 (16), L2 16 (8), L3 8 (5) B/cycle, "
             "read + write",
             "from two loads and two stores per cycle (AnandTech A76 table; LLVM "
             "N1 model: two load/store pipes); no sustained figure found", "assumed"),
            ("interpreter speed vs this machine", "2x to 3.5x slower",
             "not found (see Pi 4)", "assumed"),
        ],
    ),
}

def _read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


#: 4-byte lanes of the sensitivity product on x86, by product_isa()
X86_LANES = {"avx512": 16, "avx2": 8, "base": 4}


def x86_profile(rtrl_edge):
    """The same model's figures for THIS machine: clock from /proc/cpuinfo,
    vector width from the product the library chose, caches from sysfs;
    two FMA pipes and the bandwidths are assumed."""
    isa = rtrl_edge._kernels.product_isa()
    lanes = X86_LANES.get(isa, 4)
    clock, clock_src = None, "assumed 2.5 GHz (no 'cpu MHz' in /proc/cpuinfo)"
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":", 1)[1]) for line in f
                   if line.split(":")[0].strip() == "cpu MHz"]
        if mhz:
            clock, clock_src = max(mhz) / 1e3, "/proc/cpuinfo 'cpu MHz' (turbo not seen)"
    except (OSError, ValueError):
        pass
    clock = clock or 2.5
    caches = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            folder = os.path.join(base, entry)
            if _read_text(os.path.join(folder, "type")) == "Instruction":
                continue
            size = _read_text(os.path.join(folder, "size"))
            scale = {"K": KIB, "M": MIB}.get(size[-1], 1)
            level = _read_text(os.path.join(folder, "level"))
            caches.append((f"L{level}", int(size.rstrip("KM")) * scale))
    except (OSError, ValueError):
        caches = [("L1", 32 * KIB), ("L2", 1 * MIB)]                # assumed
    caches.sort(key=lambda c: c[0])
    vb = 4 * lanes
    return dict(
        name="this machine (x86)", soc=common.cpu_model(), core=f"product {isa}",
        clock_ghz=(clock, clock), clock_source=clock_src,
        vector_flop_per_cycle=2 * 2 * lanes, scalar_flop_per_cycle=4,
        caches=tuple(caches),
        cache_bytes_per_cycle={"L1": (2 * vb, vb), "L2": (32, 16), "L3": (10, 6)},
        dram_gbs=(12.0, 8.0), overhead_ratio=(1.0, 1.0),
        facts=[("clock", f"{clock:.2f} GHz", clock_src,
                "read" if clock_src.startswith("/proc") else "assumed"),
               ("FP32 FMA per cycle", f"two {32 * lanes}-bit FMA pipes: "
                f"{4 * lanes} FLOP/cycle", f"product_isa() = {isa}; two pipes assumed",
                "assumed"),
               ("caches", ", ".join(f"{n} {s // KIB} KiB" for n, s in caches),
                "/sys/devices/system/cpu/cpu0/cache", "read"),
               ("bandwidths", f"L1 {2 * vb} ({vb}), L2 32 (16), L3 10 (6) B/cycle, "
                "DRAM 12 (8) GB/s", "not measured", "assumed")],
    )


# --------------------------------------------------------------------------
# counts
# --------------------------------------------------------------------------

def _kwargs(learner, cell):
    return dict(learner=learner, cell=cell, window=WINDOW, rec_density=DENSITY)


def layout_buffers(rtrl_edge, n_in, n, n_out, learner, cell):
    """The buffers `planning.memory_bytes(..., optimizer="sgd")` sums, and
    the snap2 structure (None for other learners)."""
    from rtrl_edge import _layout
    mask = rtrl_edge.planning._mask(n, DENSITY) if learner == "snap2" else None
    structure = _layout.snap2_structure(mask, n_in) if mask is not None else None
    buffers = _layout.layout(n, n_in, n_out, cell=cell, learner=learner, optimizer="sgd",
                             window=WINDOW if learner == "tbptt" else None,
                             mask=mask, snap2=structure)
    return buffers, structure


#: passes over a buffer per step (see the module doc); absent names: 1
PASSES = {"P": 2, "J": 2, "P_blocks": 2, "traces": 2, "uoro_theta": 3,
          "ring_z": 1, "ring_d": 1, "theta": 3, "grad": 3, "good": 0}
#: learners whose gradient's norm is summed as it is written (one read fewer)
NORM_FUSED = {("snap1", "elman"), ("uoro", "elman"), ("tbptt", "elman")}


def bytes_moved(rtrl_edge, n_in, n, n_out, learner, cell):
    """Estimated bytes read + written in one learning step (module doc).

    Returns (charged, parts, in_cache): the total charged at the working
    set's level, the charged bytes by buffer or term, and the traffic that
    stays in L1/L2 by construction (listed, not charged)."""
    from rtrl_edge import _layout
    buffers, structure = layout_buffers(rtrl_edge, n_in, n, n_out, learner, cell)
    parts, in_cache = {}, {}
    K = n + n_in + 1
    for b in buffers:
        if cell == "elman" and learner in ("rtrl", "snap2") and b.name in ("tmp", "wsub"):
            continue                                 # per block, below
        passes = PASSES.get(b.name, 1)
        if b.name == "grad" and (learner, cell) in NORM_FUSED:
            passes -= 1
        if passes:
            parts[b.name] = passes * b.nbytes
    if cell == "elman" and learner == "rtrl":
        ldp, _ = _layout.rtrl_blocking(n, n_in)
        # each 16-column slice of P is packed into tmp, then W_rec passes over it
        in_cache["tmp (slice of P packed per column tile)"] = 2 * n * ldp * 4
        in_cache["W_rec (read per column tile)"] = math.ceil(ldp / TILE) * n * n * 4
    elif cell == "elman" and learner == "snap2":
        sizes = np.diff(structure["s_off"])
        in_cache["tmp (written + read per block)"] = int(
            np.sum(2 * (-(-sizes // 4) * 4) * structure["ld"])) * 4
        in_cache["wsub (gathered per block)"] = int(np.sum(2 * sizes * sizes)) * 4
    elif cell == "elman" and learner == "tbptt":
        parts["grad, read + written per step back"] = WINDOW * 2 * n * K * 4
        parts["W_rec, read per step back"] = (WINDOW - 1) * n * n * 4
    return int(sum(parts.values())), parts, in_cache


def counts(rtrl_edge, n_in, n, n_out, learner, cell):
    """The library's own counts for one configuration (sgd)."""
    from rtrl_edge import _layout, planning
    kw = _kwargs(learner, cell)
    macs = float(planning.work(n_in, n, n_out, **kw))
    memory = int(planning.memory_bytes(n_in, n, n_out, optimizer="sgd", **kw))
    buffers, _ = layout_buffers(rtrl_edge, n_in, n, n_out, learner, cell)
    if _layout.memory_bytes(buffers) != memory:      # the traffic rule sees every buffer
        raise RuntimeError(f"layout of {learner}/{cell} n={n} does not add up to "
                           "planning.memory_bytes")
    total, parts, in_cache = bytes_moved(rtrl_edge, n_in, n, n_out, learner, cell)
    return dict(macs=macs, flop=2.0 * macs, memory_bytes=memory, bytes_moved=total,
                bytes_parts=parts, bytes_in_cache_not_charged=in_cache)


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------

def level_of(board, memory):
    for name, size in board["caches"]:
        if memory <= size:
            return name
    return "DRAM"


def estimate(board, c, kind, overhead_us):
    """Per-step time on `board` for counts `c`, optimistic and pessimistic."""
    level = level_of(board, c["memory_bytes"])
    out = dict(level=level)
    for i, end in enumerate(("optimistic", "pessimistic")):
        clock = board["clock_ghz"][i] * 1e9
        per_cycle = board["scalar_flop_per_cycle" if kind == "scalar"
                          else "vector_flop_per_cycle"]
        peak = clock * per_cycle
        bw = (board["dram_gbs"][i] * 1e9 if level == "DRAM"
              else board["cache_bytes_per_cycle"][level][i] * clock)
        eff = (PRODUCT_EFFICIENCY if kind == "product" else EFFICIENCY)[i]
        t_c = c["flop"] / (eff * peak) * 1e6
        t_m = c["bytes_moved"] / bw * 1e6
        ovh = overhead_us * board["overhead_ratio"][i]
        us = max(t_c, t_m) + ovh
        out[end] = dict(us=us, compute_us=t_c, memory_us=t_m, overhead_us=ovh,
                        bound="compute" if t_c >= t_m else "memory",
                        peak_gflops=peak / 1e9, bandwidth_gbs=bw / 1e9,
                        max_rate_hz=CPU_BUDGET / (us * 1e-6))
    return out


def measure_overhead(rtrl_edge, quick):
    """Median µs of net.step for OnlineRNN(1, 1, 1): the fixed cost of one
    Python -> C learning step, measured on this machine."""
    net = rtrl_edge.OnlineRNN(1, 1, 1, learner="rtrl", optimizer="sgd", lr=1e-3, seed=0)
    reps = 300 if quick else 5000
    xs = [np.array([0.1 * (i % 7)], np.float32) for i in range(reps + 100)]
    ys = [np.array([0.05 * (i % 5)], np.float32) for i in range(reps + 100)]
    common.time_calls(net.step, xs, ys, 0, 100, np.zeros(100, np.int64), 0)
    ns = np.zeros(reps, np.int64)
    common.time_calls(net.step, xs, ys, 100, reps, ns, 0)
    return dict(median_us=float(np.median(ns)) / 1e3, samples=reps,
                config="OnlineRNN(1, 1, 1, learner='rtrl', optimizer='sgd').step(x, y)")


def grid(sizes):
    """(group, label, learner, cell, kind, n_in, n, n_out) of every row."""
    rows = []
    for label, learner, cell, kind, top in CONFIGS:
        rows += [("grid", label, learner, cell, kind, N_IN, n, N_OUT)
                 for n in sizes if n <= top]
    for label, learner, cell, kind, _ in CONFIGS:
        rows += [("respiratory", label, learner, cell, kind, RESP_IN, n, RESP_OUT)
                 for n in RESP_SIZES]
    return rows


def load_measured(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def anchor(rows, x86, overhead_us, measured, env):
    """Measured medians of bench_learners.json against this model on x86."""
    if measured is None:
        return dict(available=False, rows=[])
    out = []
    for r in rows:
        if r["group"] != "grid":
            continue
        m = measured.get("results", {}).get(str(r["n_hidden"]), {}).get(r["label"])
        if m is None:
            continue
        e = estimate(x86, r, r["kind"], overhead_us)
        lo, hi = e["optimistic"]["us"], e["pessimistic"]["us"]
        central = math.sqrt(lo * hi)
        out.append(dict(label=r["label"], n_hidden=r["n_hidden"], flop=r["flop"],
                        measured_us=float(m["median_us"]), optimistic_us=lo,
                        pessimistic_us=hi, central_us=central, level=e["level"],
                        bound=e["pessimistic"]["bound"],
                        ratio=float(m["median_us"]) / central,
                        in_range=bool(lo <= m["median_us"] <= hi)))
    src = measured.get("environment", {})
    return dict(available=bool(out), rows=out, source_date=src.get("date"),
                source_cpu=src.get("cpu_model"), source_isa=src.get("product_isa"),
                source_quick=measured.get("quick"),
                same_machine=(src.get("cpu_model"), src.get("product_isa"))
                == (env["cpu_model"], env["product_isa"]))


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def _g(x):
    """Three significant digits, never in exponent form."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _si(x, unit=""):
    for div, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{_g(x / div)} {p}{unit}"
    return f"{_g(x)} {unit}".rstrip()


def _bin(x):
    for div, p in ((MIB, "MiB"), (KIB, "KiB")):
        if x >= div:
            return f"{_g(x / div)} {p}"
    return f"{x:.0f} B"


def _us(x):
    return f"{_g(x / 1e3)} ms" if x >= 1e3 else f"{_g(x)} µs"


def _rng(e):
    return f"{_us(e['optimistic']['us'])} – {_us(e['pessimistic']['us'])}"


def _hz(x):
    return f"{_g(x / 1e3)} kHz" if x >= 1e3 else f"{_g(x)} Hz"


def _matrix(rows, sizes, cell):
    labels = [c[0] for c in CONFIGS]
    head = "| learner | " + " | ".join(f"n={n}" for n in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)]
    by = {(r["label"], r["n_hidden"]): r for r in rows if r["group"] == "grid"}
    for label in labels:
        cells = [cell(by[(label, n)]) if (label, n) in by else "—" for n in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(x):
    return f"{100 * x:.0f} %"


def _largest(rows, label, key, end, hz):
    ok = [r["n_hidden"] for r in rows if r["group"] == "grid" and r["label"] == label
          and r["estimate"][key][end]["max_rate_hz"] >= hz]
    return max(ok) if ok else None


def implications(rows, anc):
    """Sentences generated from the estimates (and the x86 check)."""
    out = []
    for key, board in (("pi4", "Pi 4"), ("pi5", "Pi 5")):
        parts = []
        for hz in LOOP_RATES:
            fits = []
            for label, *_ in CONFIGS:
                lo = _largest(rows, label, key, "pessimistic", hz)
                hi = _largest(rows, label, key, "optimistic", hz)
                if hi is None:
                    fits.append(f"{label} at no size")
                elif lo == hi:
                    fits.append(f"{label} n ≤ {hi}")
                else:
                    fits.append(f"{label} n ≤ {lo if lo else '—'} (≤ {hi} optimistic)")
            parts.append(f"a {_hz(hz)} loop, {_us(CPU_BUDGET / hz * 1e6)} per step "
                         f"({_pct(CPU_BUDGET)} of its period), fits " + ", ".join(fits))
        out.append(f"On a {board} " + "; ".join(parts) + ".")
    resp = [r for r in rows if r["group"] == "respiratory"]
    slow = [f"{r['label']} n={r['n_hidden']}" for r in resp
            if r["estimate"]["pi4"]["pessimistic"]["max_rate_hz"] < 10]
    not100 = [f"{r['label']} n={r['n_hidden']}" for r in resp
              if r["estimate"]["pi4"]["pessimistic"]["max_rate_hz"] < 100]
    text = ("The respiratory configuration (108 inputs, 9 outputs; the shipped "
            "recordings are sampled at 10 Hz) ")
    text += ("keeps up on both boards with every learner and size here"
             if not slow else "would not keep up on a Pi 4 with " + ", ".join(slow))
    if resp and len(not100) < len(resp):
        text += ("; on a Pi 4 all of it would also run at 100 Hz" if not not100 else
                 "; on a Pi 4 all but " + ", ".join(not100) + " would also run at 100 Hz")
    out.append(text + ".")
    small = [r for r in rows if r["group"] == "grid" and r["n_hidden"] <= 16]
    if small:
        share = np.median([r["estimate"]["pi4"]["pessimistic"]["overhead_us"]
                           / r["estimate"]["pi4"]["pessimistic"]["us"] for r in small])
        out.append(f"At n ≤ 16 the fixed Python → C cost is about {_pct(share)} of the "
                   "Pi 4 estimate: there the assumed interpreter speed, not the kernels, "
                   "sets the number.")
    if anc["available"]:
        ratios = np.array([r["ratio"] for r in anc["rows"]])
        out.append(f"On this machine the same model's central estimate lies between "
                   f"{1 / ratios.min():.1f}x above and {ratios.max():.1f}x below the "
                   "measured medians (check below): read the Pi figures with at least "
                   "that uncertainty on top of their range.")
    return out


def format_hardware(boards, x86):
    lines = ["| | Raspberry Pi 4 | Raspberry Pi 5 | this machine (anchor) |",
             "|---|---|---|---|"]
    def fmt(b):
        c = b["clock_ghz"]
        clock = f"{c[0]:.2f} GHz" if c[0] == c[1] else f"{c[0]:.1f} / {c[1]:.1f} GHz"
        return dict(
            core=f"{b['core']}, {clock}",
            peak=f"{b['vector_flop_per_cycle']} FLOP/cycle vector, "
                 f"{b['scalar_flop_per_cycle']} scalar → "
                 + " / ".join(f"{c[i] * b['vector_flop_per_cycle']:.1f}" for i in
                              ((0, 1) if c[0] != c[1] else (0,))) + " GFLOP/s",
            caches=", ".join(f"{n} {s // KIB:,} KiB" for n, s in b["caches"]),
            bw=", ".join(f"{lv} {v[0]}/{v[1]} B/cycle" for lv, v in
                         b["cache_bytes_per_cycle"].items()
                         if lv in [n for n, _ in b["caches"]])
               + f", DRAM {b['dram_gbs'][0]}/{b['dram_gbs'][1]} GB/s",
            ovh=f"{b['overhead_ratio'][0]:g}x / {b['overhead_ratio'][1]:g}x")
    cols = [fmt(boards["pi4"]), fmt(boards["pi5"]), fmt(x86)]
    for key, name in (("core", "core, clock (opt. / pess.)"),
                      ("peak", "FP32 peak, one core"), ("caches", "data caches"),
                      ("bw", "effective bandwidth (opt. / pess., read + write)"),
                      ("ovh", "Python → C overhead vs this machine (opt. / pess.)")):
        lines.append(f"| {name} | " + " | ".join(c[key] for c in cols) + " |")
    return "\n".join(lines)


def format_sources(boards):
    lines = ["| board | figure | value | source | status |", "|---|---|---|---|---|"]
    for key in ("pi4", "pi5"):
        for what, value, source, status in boards[key]["facts"]:
            lines.append(f"| {boards[key]['name']} | {what} | {value} | {source} | "
                         f"{status} |")
    return "\n".join(lines)


def _spans(rows):
    """'rtrl n=16–128 (0.41–0.65)' for each learner among `rows`."""
    out = []
    for label, *_ in CONFIGS:
        rs = [r for r in rows if r["label"] == label]
        if rs:
            ns = [r["n_hidden"] for r in rs]
            q = [r["ratio"] for r in rs]
            n_txt = f"n={ns[0]}" if len(ns) == 1 else f"n={min(ns)}–{max(ns)}"
            q_txt = f"{q[0]:.2f}" if len(q) == 1 else f"{min(q):.2f}–{max(q):.2f}"
            out.append(f"{label} {n_txt} ({q_txt})")
    return ", ".join(out)


def anchor_diagnosis(anc, x86):
    """What the x86 check says, in sentences generated from its rows."""
    rows = anc["rows"]
    under = [r for r in rows if r["ratio"] > 1.5]
    over = [r for r in rows if r["ratio"] < 1 / 1.5]
    out = []
    if under:
        out.append("Measured slower than 1.5x the estimate: " + _spans(under) + ".")
    if over:
        out.append("Measured faster than the estimate / 1.5: " + _spans(over) + ".")
    rtrl = sorted((r for r in rows if r["label"] == "rtrl"), key=lambda r: r["n_hidden"])
    if rtrl and rtrl[-1]["ratio"] < 1:
        r = rtrl[-1]
        gf = r["flop"] / (r["measured_us"] * 1e3)
        peak = x86["clock_ghz"][0] * x86["vector_flop_per_cycle"]
        out.append(f"Exact RTRL at n={r['n_hidden']} runs at {gf:.0f} GFLOP/s, "
                   f"{_pct(gf / peak)} of the nominal peak ({x86['clock_ghz'][0]:.2f} GHz "
                   f"x {x86['vector_flop_per_cycle']} FLOP/cycle): the blocked product "
                   "beats the optimistic 60 %, or the core runs above its /proc/cpuinfo "
                   "clock; if a NEON build reaches a similar share, the Pi figures of "
                   "the n^4 learners lean pessimistic.")
    rowpass = ("snap2 d=0.1", "snap1", "uoro", "tbptt k=16")
    small = [r for r in under if r["label"] in rowpass and r["n_hidden"] <= 32]
    if small:
        out.append("At small n the row-pass learners spend their step in per-row kernel "
                   "calls and short vector tails (rows of n + 9 floats), which FLOP and "
                   "byte counts do not see: their small-n Pi figures are likely "
                   f"optimistic by a similar factor (up to {max(r['ratio'] for r in small):.1f}x "
                   "here), though still microseconds.")
    big = [r for r in over if r["label"] in rowpass and r["n_hidden"] >= 256]
    if big:
        out.append("At n ≥ 256 the row-pass learners stream their state faster than the "
                   "bandwidth assumed for this machine's cache level (and consecutive "
                   "passes over one buffer re-hit a lower level), so the memory term "
                   "over-charges them.")
    if any(r["label"] == "diag (rtrl)" for r in over):
        out.append("The diag cell's loops run faster than the scalar FMA rate the model "
                   "gives them.")
    return out


def format_anchor(anc, sizes, x86):
    if not anc["available"]:
        return ("No measured medians (results/bench_learners.json) to check the model "
                "against.")
    by = {(r["label"], r["n_hidden"]): r for r in anc["rows"]}
    head = "| learner | " + " | ".join(f"n={n}" for n in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)]
    for label, *_ in CONFIGS:
        cells = []
        for n in sizes:
            r = by.get((label, n))
            cells.append("—" if r is None else
                         f"{r['ratio']:.2f}" + ("" if r["in_range"] else "*"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratios = np.array([r["ratio"] for r in anc["rows"]])
    inside = sum(r["in_range"] for r in anc["rows"])
    return ("\n".join(lines) + "\n\n"
            "Measured median / estimate (geometric mean of the optimistic and pessimistic "
            f"ends; * = outside the range). {inside} of {len(ratios)} measured medians "
            f"fall inside the estimated range; {int(np.sum((ratios >= 0.5) & (ratios <= 2)))} "
            f"of {len(ratios)} are within a factor 2 of it; ratios span "
            f"{ratios.min():.2f}–{ratios.max():.2f} (median {np.median(ratios):.2f}). "
            + " ".join(anchor_diagnosis(anc, x86))
            + f" Measurements: `results/bench_learners.json` ({anc['source_date']}, "
            f"{anc['source_cpu']}, product {anc['source_isa']}"
            f"{', a --quick run' if anc['source_quick'] else ''})"
            + ("." if anc["same_machine"] else "; NOT this machine's CPU or product, "
               "so this check says little."))


def format_report(result):
    rows, sizes = result["rows"], result["sizes"]
    ovh = result["overhead"]
    resp = [r for r in rows if r["group"] == "respiratory"]
    rlines = ["| learner | n_hidden | FLOP/step | bytes/step | memory | Pi 4 µs/step | "
              "Pi 5 µs/step | max rate at 50 % CPU, Pi 4 / Pi 5 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in resp:
        e4, e5 = r["estimate"]["pi4"], r["estimate"]["pi5"]
        rlines.append(f"| {r['label']} | {r['n_hidden']} | {_si(r['flop'])} | "
                      f"{_bin(r['bytes_moved'])} | {r['memory_bytes'] / KIB:,.1f} KiB | "
                      f"{_rng(e4)} | {_rng(e5)} | "
                      f"{_hz(e4['pessimistic']['max_rate_hz'])} / "
                      f"{_hz(e5['pessimistic']['max_rate_hz'])} |")
    return "\n".join([
        "**ESTIMATE, not a measurement**: no Pi was used. Per learning step (sgd, one "
        "thread): FLOP = 2 × `planning.work()` multiply-adds, memory = "
        "`planning.memory_bytes()` (exact), bytes moved estimated from the buffers of "
        "`_layout` (rule in the script's docstring); time = max(FLOP / (efficiency × "
        "peak), bytes / bandwidth of the level the memory fits in) + a fixed Python → C "
        f"cost ({ovh['median_us']:.2f} µs measured here for `OnlineRNN(1, 1, 1).step`, "
        "times an assumed Pi / this-machine ratio). Ranges run from the optimistic end "
        f"(efficiency {_pct(EFFICIENCY[0])}, {_pct(PRODUCT_EFFICIENCY[0])} for exact RTRL's "
        "blocked product, higher bandwidth, lower overhead ratio, Pi 4 "
        f"at 1.8 GHz) to the pessimistic end (efficiency {_pct(EFFICIENCY[1])}, "
        f"{_pct(PRODUCT_EFFICIENCY[1])} for the product, lower "
        "bandwidth, higher overhead ratio, Pi 4 at 1.5 GHz).",
        "",
        format_hardware(BOARDS, result["x86_profile"]),
        "",
        f"Counts per learning step (n_in = {N_IN}, n_out = {N_OUT}): FLOP / bytes moved "
        "/ `memory_bytes`:",
        "",
        _matrix(rows, sizes, lambda r: f"{_si(r['flop'])} / {_bin(r['bytes_moved'])}"
                f" / {r['memory_bytes'] / KIB:,.1f} KiB"),
        "",
        "Raspberry Pi 4, estimated µs per learning step (optimistic – pessimistic):",
        "",
        _matrix(rows, sizes, _rng_grid("pi4")),
        "",
        "Raspberry Pi 5, estimated µs per learning step (optimistic – pessimistic):",
        "",
        _matrix(rows, sizes, _rng_grid("pi5")),
        "",
        "Largest sample rate at a 50 % CPU budget (pessimistic end), Pi 4 / Pi 5:",
        "",
        _matrix(rows, sizes, _rates),
        "",
        f"Respiratory configuration (n_in = {RESP_IN}: 12 past samples × 9 coordinates, "
        f"n_out = {RESP_OUT}):",
        "",
        "\n".join(rlines),
        "",
        "What this implies: " + " ".join(result["implications"]),
        "",
        "Honesty check -- the same model for this machine "
        f"({result['x86_profile']['soc']}, {result['x86_profile']['clock_ghz'][0]:.2f} GHz "
        f"from {result['x86_profile']['clock_source']}, product "
        f"{result['environment']['product_isa']}) against "
        "the measured medians of `bench_learners.py`, measured / estimated:",
        "",
        format_anchor(result["anchor"], sizes, result["x86_profile"]),
        "",
        "Sources of the hardware figures (confirmed = found in a stored public source "
        "by search; spec = vendor documentation, not re-checked by search; assumed = "
        "not confirmed):",
        "",
        format_sources(BOARDS),
        "",
        "Environment (overhead measured here): "
        + common.format_environment(result["environment"]),
    ])


def _rates(r):
    return (f"{_hz(r['estimate']['pi4']['pessimistic']['max_rate_hz'])} / "
            f"{_hz(r['estimate']['pi5']['pessimistic']['max_rate_hz'])}")


def _rng_grid(key):
    return lambda r: _rng(r["estimate"][key])


def write_plot(result):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows, sizes = result["rows"], result["sizes"]
    anc = {(r["label"], r["n_hidden"]): r["measured_us"] for r in result["anchor"]["rows"]}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, key in zip(axes, ("pi4", "pi5")):
        for label, *_ in CONFIGS:
            rs = [r for r in rows if r["group"] == "grid" and r["label"] == label]
            ns = [r["n_hidden"] for r in rs]
            lo = np.array([r["estimate"][key]["optimistic"]["us"] for r in rs])
            hi = np.array([r["estimate"][key]["pessimistic"]["us"] for r in rs])
            line, = ax.plot(ns, np.sqrt(lo * hi), "-", label=f"{label} (estimate)")
            ax.fill_between(ns, lo, hi, color=line.get_color(), alpha=0.18, linewidth=0)
            mn = [n for n in ns if (label, n) in anc]
            if mn:
                ax.plot(mn, [anc[(label, n)] for n in mn], "x", color=line.get_color(),
                        markersize=5)
        for hz in LOOP_RATES:
            ax.axhline(CPU_BUDGET / hz * 1e6, color="grey", linestyle=":", linewidth=1)
            ax.text(sizes[0], CPU_BUDGET / hz * 1e6 * 1.1, f"{hz} Hz at 50 % CPU",
                    fontsize=7, color="grey")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(sizes))
        ax.set_xticklabels([str(n) for n in sizes])
        ax.set_xlabel(f"n_hidden (n_in = {N_IN}, n_out = {N_OUT})")
        ax.set_title(f"{BOARDS[key]['name']}: ESTIMATE (band: optimistic – pessimistic)",
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("µs per learning step")
    axes[0].plot([], [], "x", color="black", label="measured on this x86 machine")
    axes[0].legend(fontsize=7)
    fig.suptitle("Estimated, not measured: Raspberry Pi per-step cost from counted work "
                 f"({result['environment']['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=110)
    plt.close(fig)
    return PNG_PATH


SECTION = """\
## `pi_estimate.py` -- Raspberry Pi 4 / 5 cost per step: an ESTIMATE

Not a measurement (no Pi is used): each learner's FLOP (2 x `planning.work`),
bytes moved (from the `_layout` buffers) and `planning.memory_bytes` per step,
turned into an optimistic-to-pessimistic µs range on a Pi 4 and a Pi 5 from
documented hardware figures, and the same model checked against the measured
medians of `bench_learners.py` on this machine.  Regenerate (under a second):

    python benchmarks/pi_estimate.py

"""


def write_readme(text):
    common.write_block(BEGIN, END, text, SECTION)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N",
                   help="n_hidden of the n_in = 8 grid (default: 8 ... 512)")
    p.add_argument("--quick", action="store_true",
                   help="fewer timed calls for the overhead: a smoke run")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if any(n < 2 or n % 2 for n in args.sizes):
        p.error("--sizes must be even integers >= 2 (the diag cell pairs its units)")
    rtrl_edge = common.import_library()
    t0 = time.perf_counter()
    env = common.environment(rtrl_edge)
    overhead = measure_overhead(rtrl_edge, args.quick)
    x86 = x86_profile(rtrl_edge)
    rows = []
    for group, label, learner, cell, kind, n_in, n, n_out in grid(args.sizes):
        c = counts(rtrl_edge, n_in, n, n_out, learner, cell)
        row = dict(group=group, label=label, learner=learner, cell=cell, kind=kind,
                   n_in=n_in, n_hidden=n, n_out=n_out, optimizer="sgd",
                   window=WINDOW if learner == "tbptt" else None,
                   rec_density=DENSITY if learner == "snap2" else None, **c)
        row["estimate"] = {key: estimate(board, c, kind, overhead["median_us"])
                           for key, board in BOARDS.items()}
        rows.append(row)
    anc = anchor(rows, x86, overhead["median_us"], load_measured(LEARNERS_JSON), env)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="pi_estimate", estimate_not_measurement=True,
                  quick=bool(args.quick),
                  command=" ".join(["python benchmarks/pi_estimate.py", *given]),
                  environment=env, sizes=list(args.sizes),
                  model=dict(efficiency=dict(optimistic=EFFICIENCY[0],
                                             pessimistic=EFFICIENCY[1]),
                             product_efficiency=dict(optimistic=PRODUCT_EFFICIENCY[0],
                                                     pessimistic=PRODUCT_EFFICIENCY[1]),
                             cpu_budget=CPU_BUDGET, flop_per_mac=2,
                             passes=PASSES, window=WINDOW, rec_density=DENSITY),
                  boards=BOARDS, x86_profile=x86, overhead=overhead, rows=rows,
                  anchor=anc)
    result["implications"] = implications(rows, anc)
    text = format_report(result)
    print(text)
    print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if not args.no_write:
        common.publish(result, text, JSON_PATH, write_readme, plot=lambda: write_plot(result),
                       alt="estimated µs per step on a Pi 4 and a Pi 5")
    return result


if __name__ == "__main__":
    main()
