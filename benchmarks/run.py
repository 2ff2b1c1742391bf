"""Regenerate every table and plot of benchmarks/README.md (and
benchmarks/learning.md) with one command.

Each benchmark runs in a fresh process, one after the other (never two at
once: they time things), and rewrites its own marked block of the README, its
JSON in ``results/`` and its plot; each block names the command and the
machine it ran on.  This script then writes a summary block at the top of the
README: when, on what, how long each benchmark took, and whether it failed.

    python benchmarks/run.py --quick   # every benchmark in its quick mode: minutes
    python benchmarks/run.py           # the full runs (about an hour on 2 cores)
    python benchmarks/run.py --only bench_extmarker bench_peers --quick

Quick mode is for checking that everything regenerates and for a first look:
fewer repetitions, sizes and hyper-parameters, so its numbers are indicative;
every block says which mode produced it.  The package must be importable:
installed (``pip install ".[bench]"``) or built in place
(``python setup.py build_ext --inplace``), in which case the repository is put
on the benchmarks' PYTHONPATH.
"""
import argparse
import datetime
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
README = os.path.join(HERE, "README.md")
BEGIN, END = "<!-- run:begin -->", "<!-- run:end -->"

# (script, arguments in quick mode, arguments in full mode, what it regenerates)
BENCHMARKS = (
    ("bench_step", ["--quick"], [], "exact RTRL step against numpy and the matmul roofline"),
    ("bench_learners", ["--quick"], [], "every learner's latency and memory against n"),
    ("bench_learning", [], [], "learning.md: how well each learner learns"),
    ("bench_bridge", ["--quick"], [], "serial frame decoding: throughput, single bit flips"),
    ("bench_horizons", ["--quick"], [], "forecast error against horizon"),
    ("bench_loop", ["--quick"], [], "loop overhead and end-to-end latency"),
    ("bench_extmarker", ["--quick"], [], "the published respiratory-motion study"),
    ("bench_auto", ["--quick"], [], "the auto forecaster's member weights over time"),
    ("bench_peers", ["--quick"], [], "PyTorch and other peers on the same stream"),
    ("bench_apps", ["--quick"], [], "the applications beside PyTorch, scikit-learn, gzip/xz"),
    ("bench_init", ["--quick"], [], "the weight initialisations compared (full: ~35 min)"),
    ("bench_control", ["--quick"], [], "delay compensation on MuJoCo robot simulators"),
    ("bench_streams", ["--quick"], [], "many streams in one process: throughput and latency"),
    ("pi_estimate", [], [], "Raspberry Pi 4/5 estimate from FLOP and byte counts"),
)
NAMES = tuple(b[0] for b in BENCHMARKS)


def python_path():
    """PYTHONPATH for the benchmarks: unchanged if rtrl_edge imports from
    outside the repository (installed), else the repository (in-place build)."""
    env = dict(os.environ)
    probe = [sys.executable, "-c", "import rtrl_edge._kernels"]
    if subprocess.run(probe, cwd=HERE, env=env, capture_output=True).returncode == 0:
        return env, "installed package"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    if subprocess.run(probe, cwd=HERE, env=env, capture_output=True).returncode == 0:
        return env, "in-place build in " + ROOT
    raise SystemExit("cannot import rtrl_edge: `pip install \".[bench]\"`, or build it in "
                     "place with `python setup.py build_ext --inplace`")


def machine():
    """CPU model and count, as the benchmarks' environment lines name them."""
    sys.path.insert(0, HERE)
    import bench_step as common          # noqa: E402
    return common.cpu_model(), os.cpu_count()


def write_summary(text):
    """Put `text` in the summary block, which sits before the first section."""
    block = f"{BEGIN}\n{text}\n{END}"
    with open(README, encoding="utf-8") as f:
        doc = f.read()
    b, e = doc.find(BEGIN), doc.find(END)
    if b != -1 and e > b:
        doc = doc[:b] + block + doc[e + len(END):]
    else:
        first = doc.find("\n## ")
        at = len(doc) if first == -1 else first + 1
        doc = doc[:at].rstrip("\n") + "\n\n" + block + "\n\n" + doc[at:]
    with open(README, "w", encoding="utf-8") as f:
        f.write(doc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="every benchmark's quick mode")
    mode.add_argument("--full", action="store_true", help="the full runs (the default)")
    p.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME",
                   help="run only these: " + ", ".join(NAMES))
    p.add_argument("--keep-going", action="store_true",
                   help="run the rest after a benchmark fails (exit status still 1)")
    args = p.parse_args(argv)
    env, source = python_path()
    cpu, cores = machine()
    chosen = [b for b in BENCHMARKS if not args.only or b[0] in args.only]
    label = "--quick" if args.quick else "--full"
    started = datetime.datetime.now(datetime.timezone.utc)
    rows, failed = [], []
    t_all = time.perf_counter()
    for i, (name, quick_args, full_args, what) in enumerate(chosen, 1):
        cmd = [sys.executable, os.path.join(HERE, name + ".py")] + (
            quick_args if args.quick else full_args)
        print(f"[{i}/{len(chosen)}] {name}: {what}\n    $ {' '.join(cmd[1:])}",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL).returncode
        took = time.perf_counter() - t0
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"    {status} in {took:.0f} s", file=sys.stderr, flush=True)
        rows.append(f"| `{name}.py` | {what} | {took:.0f} s | {status} |")
        if rc != 0:
            failed.append(name)
            if not args.keep_going:
                break
    total = time.perf_counter() - t_all
    text = "\n".join([
        f"Last regenerated with `python benchmarks/run.py {label}"
        + (f" --only {' '.join(args.only)}" if args.only else "") + f"` on {cpu} "
        f"({cores} CPUs), started {started.isoformat(timespec='seconds')}, "
        f"{total / 60:.1f} min in all, rtrl_edge from the {source.split(' in ')[0]}. "
        "Each section below names its own command and environment.",
        "",
        "| benchmark | regenerates | time | status |",
        "|---|---|---:|---|",
        *rows,
    ])
    write_summary(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
