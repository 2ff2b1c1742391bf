"""Fixed-seed float32 results of rtrl_edge, for comparing two builds.

Run by tools/arm64-check on the x86-64 build (``python agreement.py compute
OUT.npz``, once with the widest kernels and once with RTRL_EDGE_ISA=base);
the arm64 run (``test_x86_agreement.py`` under qemu) recomputes every case
on exactly the same inputs (read back from the x86 file, so neither side's
random number generator is trusted) and compares.

Tolerances are the test suite's: a gradient agrees when
||g_arm - g_x86|| / ||g_x86|| <= 1e-4 (tests/reference.relative_error, as in
tests/test_gradient.py and tests/test_kernels_isa.py); short online runs
of 6 to 30 steps (predictions, parameters after them, forecasts) when
|a - b| <= 1e-5 + 1e-4 |b| elementwise (test_every_learner_agrees_across_isas);
the 200-step online runs with rtol 1e-3, atol 1e-4 (test_isas_agree_on_an_online_run).
The initial parameters of a seed must be bit-identical (same numpy, same
seed), and so must everything in a checkpoint written by the x86 build once
the arm64 build has loaded it (it then learns on, held to the short-run
tolerance).
"""
import sys

import numpy as np

GRAD_RTOL = 1e-4                 # relative (Frobenius) error of a gradient
SHORT_RTOL, SHORT_ATOL = 1e-4, 1e-5
LONG_RTOL, LONG_ATOL = 1e-3, 1e-4

# (name, constructor kwargs): every learner and cell the package has
CONFIGS = [
    ("rtrl-3-20-2", dict(n_in=3, n_hidden=20, n_out=2)),
    # several column blocks of the sensitivity product, the last one partial
    ("rtrl-2-45-2", dict(n_in=2, n_hidden=45, n_out=2)),
    ("rtrl-1-1-1", dict(n_in=1, n_hidden=1, n_out=1)),
    ("rtrl-masked", dict(n_in=3, n_hidden=20, n_out=2, rec_density=0.5)),
    ("snap1", dict(n_in=3, n_hidden=20, n_out=2, learner="snap1")),
    ("snap2", dict(n_in=3, n_hidden=20, n_out=2, learner="snap2", rec_density=0.3)),
    ("uoro", dict(n_in=3, n_hidden=20, n_out=2, learner="uoro")),
    ("tbptt", dict(n_in=3, n_hidden=20, n_out=2, learner="tbptt", window=4)),
    ("diag", dict(n_in=3, n_hidden=20, n_out=2, cell="diag")),
    ("rtrl-adam-norm-clip", dict(n_in=3, n_hidden=16, n_out=3, optimizer="adam", lr=3e-3,
                                 clip=1.0, normalize=True)),
]
SHORT_T = 30
LONG_T = 200
# exact RTRL over many hidden sizes: every shape of full and partial tiles of
# the sensitivity product (4 x 16 on aarch64, 4 x 8 / 4 x 16 / 4 x 64 on x86)
SWEEP = list(range(1, 25)) + [31, 32, 33, 47, 48, 49, 63, 64, 65]
SWEEP_T = 6


def _kind(key):
    """Which tolerance a stored array is held to."""
    if "/grad/" in key:
        return "gradient"
    if "/init/" in key or "/loaded/" in key:
        return "exact"
    if key.startswith("long/"):
        return "long"
    return "short"


def make_inputs(seed=20240611):
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, kw in CONFIGS:
        inputs[f"in/{name}/xs"] = rng.normal(size=(SHORT_T, kw["n_in"])).astype(np.float32)
        inputs[f"in/{name}/ys"] = rng.normal(size=(SHORT_T, kw["n_out"])).astype(np.float32)
    for n in SWEEP:
        inputs[f"in/sweep-{n}/xs"] = rng.normal(size=(SWEEP_T, 3)).astype(np.float32)
        inputs[f"in/sweep-{n}/ys"] = rng.normal(size=(SWEEP_T, 2)).astype(np.float32)
    for part in ("train", "continue"):
        inputs[f"in/ckpt-{part}/xs"] = rng.normal(size=(SHORT_T, 3)).astype(np.float32)
        inputs[f"in/ckpt-{part}/ys"] = rng.normal(size=(SHORT_T, 3)).astype(np.float32)
    inputs["in/long/xs"] = rng.normal(size=(LONG_T, 4)).astype(np.float32)
    inputs["in/long/ys"] = rng.normal(size=(LONG_T, 2)).astype(np.float32)
    return inputs


def checkpoint_case(inputs, checkpoint=None):
    """A checkpoint moves between machines: written by the x86 build (or here,
    if `checkpoint`, its bytes, is None), loaded -- parameters, state,
    moments, normaliser must come back bit-identical -- and trained on."""
    import os
    import tempfile

    import rtrl_edge

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        if checkpoint is None:
            net = rtrl_edge.OnlineRNN(3, 16, 3, optimizer="adam", lr=3e-3, clip=1.0,
                                      normalize=True, seed=7)
            for x, y in zip(inputs["in/ckpt-train/xs"], inputs["in/ckpt-train/ys"]):
                net.step(x, y)
            net.save(path)
            with open(path, "rb") as f:
                checkpoint = f.read()
        else:
            with open(path, "wb") as f:
                f.write(checkpoint)
        out["ckpt/file"] = np.frombuffer(checkpoint, dtype=np.uint8)
        net = rtrl_edge.OnlineRNN.load(path)
    for k, v in net.snapshot().items():
        out[f"ckpt/loaded/{k}"] = np.array(v)
    out["ckpt/continue"] = np.array(
        [net.step(x, y) for x, y in zip(inputs["in/ckpt-continue/xs"],
                                        inputs["in/ckpt-continue/ys"])])
    return out


def compute(inputs, checkpoint=None):
    """Every case, on the given inputs; returns {key: array}.  `checkpoint`:
    see checkpoint_case."""
    import rtrl_edge
    from rtrl_edge import data

    out = {}
    for name, kw in CONFIGS:
        kw = dict(kw)
        kw.setdefault("optimizer", "sgd")
        kw.setdefault("lr", 1e-2)
        n_in, n_hidden, n_out = kw.pop("n_in"), kw.pop("n_hidden"), kw.pop("n_out")
        net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, seed=4, **kw)
        xs, ys = inputs[f"in/{name}/xs"], inputs[f"in/{name}/ys"]
        for p, v in net.params.items():
            out[f"{name}/init/{p}"] = np.array(v)
        for p, g in net.gradient(xs, ys).items():
            out[f"{name}/grad/{p}"] = np.array(g)
        out[f"{name}/step"] = np.array([net.step(x, y) for x, y in zip(xs, ys)])
        for p, v in net.params.items():
            out[f"{name}/trained/{p}"] = np.array(v)
        out[f"{name}/forecast"] = np.array(net.forecast(xs[:5]))
        out[f"{name}/predict"] = np.array([net.predict(x) for x in xs[:5]])

    for n in SWEEP:
        net = rtrl_edge.OnlineRNN(3, n, 2, optimizer="sgd", lr=1e-2, seed=n)
        xs, ys = inputs[f"in/sweep-{n}/xs"], inputs[f"in/sweep-{n}/ys"]
        for p, g in net.gradient(xs, ys).items():
            out[f"sweep-{n}/grad/{p}"] = np.array(g)
        out[f"sweep-{n}/step"] = np.array([net.step(x, y) for x, y in zip(xs, ys)])

    out.update(checkpoint_case(inputs, checkpoint))

    # a longer online run (test_isas_agree_on_an_online_run's set-up)
    net = rtrl_edge.OnlineRNN(4, 24, 2, optimizer="sgd", lr=2e-2, seed=1)
    out["long/sgd-4-24-2/step"] = np.array(
        [net.step(x, y) for x, y in zip(inputs["in/long/xs"], inputs["in/long/ys"])])

    # the demo's model on the first 200 samples of the shipped recording,
    # 200 ms (2 samples) ahead
    xyz = data.load_recording().xyz[:LONG_T + 2].astype(np.float32)
    net = rtrl_edge.OnlineRNN(3, 16, 3, learner="rtrl", optimizer="sgd", lr=0.01,
                              normalize=True, seed=0)
    out["long/demo-recording/step"] = np.array(
        [net.step(x, y) for x, y in zip(xyz[:-2], xyz[2:])])
    return out


def relative_error(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare(got, ref):
    """Rows (key, kind, norm_rel, tol_used, ok) for every key of ref: the
    relative (Frobenius) error, and the largest share of the tolerance that
    any element (any array, for gradients) uses (ok when <= 1)."""
    rows = []
    for key in sorted(ref):
        if key.startswith(("in/", "meta/")) or key == "ckpt/file":
            continue
        a = np.asarray(got[key], dtype=np.float64)
        b = np.asarray(ref[key], dtype=np.float64)
        kind = _kind(key)
        if a.shape != b.shape:
            rows.append((key, kind, float("inf"), float("inf"), False))
            continue
        norm_rel = relative_error(a, b)
        if kind == "exact":
            same = np.array_equal(np.asarray(got[key]), np.asarray(ref[key]))
            used = 0.0 if same else float("inf")
        elif kind == "gradient":
            used = norm_rel / GRAD_RTOL
        else:
            rtol, atol = (LONG_RTOL, LONG_ATOL) if kind == "long" else (SHORT_RTOL, SHORT_ATOL)
            used = float(np.max(np.abs(a - b) / (atol + rtol * np.abs(b)))) if a.size else 0.0
        ok = used <= 1.0 and bool(np.all(np.isfinite(a)))
        rows.append((key, kind, norm_rel, used, ok))
    return rows


def summarise(rows):
    """{kind: [max norm-relative error, max share of tolerance used, all ok, count]}"""
    out = {}
    for key, kind, norm_rel, used, ok in rows:
        m = out.setdefault(kind, [0.0, 0.0, True, 0])
        m[0] = max(m[0], norm_rel)
        m[1] = max(m[1], used)
        m[2] = m[2] and ok
        m[3] += 1
    return out


def main(argv):
    if len(argv) != 3 or argv[1] != "compute":
        print("usage: agreement.py compute OUT.npz", file=sys.stderr)
        return 2
    import os
    import platform

    import rtrl_edge
    from rtrl_edge import _kernels

    inputs = make_inputs()
    out = compute(inputs)
    out.update(inputs)
    out["meta/machine"] = np.array(platform.machine())
    out["meta/isa"] = np.array(os.environ.get("RTRL_EDGE_ISA") or _kernels.product_isa())
    out["meta/module"] = np.array(_kernels.__file__)
    out["meta/numpy"] = np.array(np.__version__)
    np.savez(argv[2], **out)
    print(f"{platform.machine()} build {os.path.dirname(rtrl_edge.__file__)}, "
          f"kernels {out['meta/isa']}, numpy {np.__version__}: {len(out)} arrays -> {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
