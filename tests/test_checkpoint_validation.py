"""Loading a checkpoint is a validator, not a trust (rtrl_edge.checkpoint).

Each test here was written against an attack that succeeded before the
reader validated: bit flips in the zip directory escaping as
NotImplementedError / RuntimeError, a plain .npy giving TypeError, crafted
fields giving MemoryError / AttributeError / OverflowError, a 3 MB zip bomb
taking 6 GB, a NaN model with a recomputed checksum loading, a FIFO hanging
the reader.  Whatever the file, loading raises CheckpointError or
FileNotFoundError, or returns the model that was saved.
"""
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
import zlib

import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import checkpoint
from rtrl_edge.checkpoint import CheckpointError

KEY = b"0123456789abcdef-test-key"


LEARNERS = ("rtrl", "snap1", "snap2", "uoro", "tbptt")
# (learner, cell, loss) of the models whose checkpoints are mutated and crafted
MODELS = ([(learner, "elman", "mse") for learner in LEARNERS]
          + [(learner, "gru", "mse") for learner in LEARNERS] + [("rtrl", "gru", "softmax")])


def target(net, rng=None):
    """A valid target for `net`: a row of 2 (mse), a class of 2 (softmax)."""
    if net.loss == "softmax":
        return 1 if rng is None else int(rng.integers(2))
    return np.ones(2) if rng is None else rng.normal(size=2)


def trained(learner="rtrl", optimizer="adam", **kw):
    if learner == "tbptt":
        kw.setdefault("window", 4)
    if learner == "snap2":
        kw.setdefault("rec_density", 0.5)
    net = rtrl_edge.OnlineRNN(3, 4, 2, learner=learner, optimizer=optimizer, lr=1e-2,
                              normalize=True, seed=3, **kw)
    rng = np.random.default_rng(0)
    for _ in range(12):
        net.step(rng.normal(size=3), target(net, rng))
    return net


def members(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k].copy() for k in f.files}


def write_members(path, arrays, *, fix_checksum=True):
    arrays = dict(arrays)
    if fix_checksum:
        arrays.pop("checksum", None)
        arrays["checksum"] = np.array(checkpoint.checksum(arrays))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def same_model(a, b):
    sa, sb = a.snapshot(), b.snapshot()
    return set(sa) == set(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


def load_or_error(path, **kw):
    """The loaded model, or the CheckpointError; any other exception fails."""
    try:
        return rtrl_edge.OnlineRNN.load(path, **kw)
    except CheckpointError as exc:
        return exc


# ---------------------------------------------------------------- bit flips

def test_every_bit_flip_of_the_zip_directory_is_refused_or_harmless(tmp_path):
    """Every single-bit flip in the central directory and its end record
    (where 279 flips escaped as NotImplementedError / RuntimeError), and 1,000
    seeded flips elsewhere: CheckpointError, or the very model saved (a flip
    in a timestamp or attribute field changes nothing that is read)."""
    net = trained()
    good = tmp_path / "good.npz"
    net.save(good)
    raw = bytearray(good.read_bytes())
    start = zipfile.ZipFile(good).start_dir
    rng = np.random.default_rng(11)
    bits = list(range(8 * start, 8 * len(raw)))
    bits += rng.integers(0, 8 * start, 1000).tolist()
    path = tmp_path / "flipped.npz"
    refused = 0
    for bit in bits:
        raw[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(raw)
        raw[bit // 8] ^= 1 << (bit % 8)
        got = load_or_error(path)
        if isinstance(got, CheckpointError):
            refused += 1
        else:
            assert same_model(got, net), f"bit {bit} loaded a different model"
    assert refused > len(bits) // 2


# ---------------------------------------------------------------- foreign files

def test_a_plain_npy_file_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    np.save(path.open("wb"), np.zeros(10, np.float32))
    with pytest.raises(CheckpointError, match="not a readable rtrl_edge checkpoint"):
        rtrl_edge.OnlineRNN.load(path)


@pytest.mark.parametrize("content", [b"", b"PK", b"PK\x05\x06" + b"\0" * 18, b"\0" * 4096])
def test_empty_and_degenerate_zips_are_refused(tmp_path, content):
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        rtrl_edge.OnlineRNN.load(path)


def test_a_folder_and_a_fifo_are_refused_at_once(tmp_path):
    """A FIFO used to block the reader forever: refused before it is opened."""
    with pytest.raises(CheckpointError, match="folder"):
        rtrl_edge.OnlineRNN.load(tmp_path)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    result = []
    t = threading.Thread(target=lambda: result.append(load_or_error(fifo)), daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "loading a FIFO blocked"
    assert isinstance(result[0], CheckpointError) and "FIFO" in str(result[0])


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        rtrl_edge.OnlineRNN.load(tmp_path / "none.npz")


# ---------------------------------------------------------------- crafted fields

def crafted_variants(arrays):
    """(label, arrays) with one member replaced by something a valid file
    never holds, the checksum recomputed (a deliberate forgery, not an
    accident)."""
    cfg = json.loads(str(arrays["config"]))

    def with_config(**change):
        return dict(arrays, config=np.array(json.dumps(dict(cfg, **change))))

    yield "huge n_hidden", with_config(n_hidden=10 ** 9)
    yield "huge n_in", with_config(n_in=2 ** 62)
    yield "n_hidden as text", with_config(n_hidden="4")
    yield "n_hidden bool", with_config(n_hidden=True)
    yield "n_hidden zero", with_config(n_hidden=0)
    yield "negative window", with_config(learner="tbptt", window=-3)
    yield "unknown learner", with_config(learner="magic")
    yield "other cell", with_config(cell="elman" if cfg["cell"] == "gru" else "gru")
    yield "unknown loss", with_config(loss="hinge")
    yield "loss as number", with_config(loss=1)
    yield "unknown init", with_config(init="xavier")
    yield "init as number", with_config(init=3)
    yield "init null", with_config(init=None)
    yield "lr infinite", with_config(lr=float("inf"))
    yield "lr as list", with_config(lr=[1])
    yield "extra config field", with_config(evil=1)
    yield "config not an object", dict(arrays, config=np.array("[1, 2]"))
    yield "config not JSON", dict(arrays, config=np.array("{n_in: 3"))
    yield "config as number", dict(arrays, config=np.array(3.0))
    yield "version as text", dict(arrays, format_version=np.array("1"))
    yield "version huge", dict(arrays, format_version=np.array(2 ** 62))
    yield "version array", dict(arrays, format_version=np.arange(3))
    yield "counters huge", dict(arrays, counters=np.full(arrays["counters"].shape, -2 ** 62))
    yield "counters float", dict(arrays, counters=arrays["counters"].astype(np.float64))
    yield "counters wrong length", dict(arrays, counters=np.zeros(2, np.int64))
    for name in ("theta", "h", "m1", "m2", "x_mean", "x_var", "counts", "P"):
        a = arrays[name]
        yield f"{name} NaN", dict(arrays, **{name: np.full_like(a, np.nan)})
        yield f"{name} inf", dict(arrays, **{name: np.full_like(a, np.inf)})
        other = np.float32 if a.dtype == np.float64 else np.float64
        yield f"{name} as {np.dtype(other)}", dict(arrays, **{name: a.astype(other)})
        yield f"{name} too long", dict(arrays, **{name: np.concatenate([a.ravel(), a.ravel()])})
        yield f"{name} empty", dict(arrays, **{name: a.ravel()[:0]})
        yield f"{name} as text", dict(arrays, **{name: np.array("x")})
    yield "negative variance", dict(arrays, x_var=-np.abs(arrays["x_var"]) - 1)
    yield "negative adam moment", dict(arrays, m2=-np.abs(arrays["m2"]) - 1)
    yield "object array", dict(arrays, theta=np.array([object()], dtype=object))
    yield "unknown member", dict(arrays, surprise=np.zeros(3))
    yield "missing theta", {k: v for k, v in arrays.items() if k != "theta"}


@pytest.mark.parametrize("kw", [dict(), dict(cell="gru"), dict(cell="gru", loss="softmax")],
                         ids=["elman", "gru", "gru-softmax"])
def test_crafted_fields_give_checkpoint_error_only(tmp_path, kw):
    net = trained(**kw)
    good = tmp_path / "good.npz"
    net.save(good)
    arrays = members(good)
    for label, variant in crafted_variants(arrays):
        path = tmp_path / "crafted.npz"
        try:
            write_members(path, variant)
        except ValueError:        # np.savez refuses object arrays without pickles
            continue
        got = load_or_error(path)
        assert isinstance(got, CheckpointError), f"{label}: loaded"
    assert same_model(rtrl_edge.OnlineRNN.load(good), net)


@pytest.mark.parametrize("cell", ["elman", "gru"])
@pytest.mark.parametrize("ring", [(10 ** 9, 0), (-1, 0), (4, 0), (0, 5), (0, -1)],
                         ids=lambda r: f"pos{r[0]}-held{r[1]}")
def test_a_tbptt_ring_position_outside_its_window_is_refused(tmp_path, ring, cell):
    """The compiled tbptt kernel indexes its ring with this position: a
    crafted value would write outside the arena."""
    net = trained("tbptt", cell=cell)
    path = tmp_path / "t.npz"
    net.save(path)
    arrays = members(path)
    arrays["ring"] = np.array(ring, np.int64)
    write_members(path, arrays)
    with pytest.raises(CheckpointError, match="ring"):
        rtrl_edge.OnlineRNN.load(path)


@pytest.mark.parametrize("cell", ["elman", "gru"])
def test_an_all_zero_random_state_is_refused(tmp_path, cell):
    net = trained("uoro", cell=cell)
    path = tmp_path / "u.npz"
    net.save(path)
    arrays = members(path)
    arrays["rng"] = np.zeros(2, np.int64)
    write_members(path, arrays)
    with pytest.raises(CheckpointError, match="random state"):
        rtrl_edge.OnlineRNN.load(path)


@pytest.mark.parametrize("learner,cell,loss", MODELS, ids=["-".join(m) for m in MODELS])
def test_seeded_member_mutations_never_escape(tmp_path, learner, cell, loss):
    """Property, fixed seed: any member replaced by random bytes of random
    dtype and shape, checksum recomputed, raises CheckpointError or loads a
    model that then steps normally."""
    net = trained(learner, cell=cell, loss=loss)
    good = tmp_path / "good.npz"
    net.save(good)
    arrays = members(good)
    names = sorted(arrays)
    rng = np.random.default_rng(5)
    dtypes = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]
    for _ in range(300):
        variant = dict(arrays)
        name = names[rng.integers(len(names))]
        a = arrays[name]
        kind = rng.integers(4)
        if kind == 0:      # same shape, random bytes
            raw = rng.integers(0, 256, a.nbytes, dtype=np.uint8).tobytes()
            variant[name] = np.frombuffer(raw, a.dtype).reshape(a.shape).copy() \
                if a.dtype.kind != "U" else np.array(raw[:8].hex())
        elif kind == 1:    # another dtype
            variant[name] = np.zeros(a.shape, dtypes[rng.integers(len(dtypes))])
        elif kind == 2:    # another shape
            variant[name] = np.zeros(int(rng.integers(0, 50)), a.dtype if a.dtype.kind != "U"
                                     else np.float32)
        else:              # extreme values
            if a.dtype.kind in "fi":
                v = a.copy()
                v.flat[rng.integers(max(v.size, 1))] = rng.choice(
                    [np.iinfo(np.int64).max if a.dtype.kind == "i" else np.float32(3e38), -1])
                variant[name] = v
        path = tmp_path / "m.npz"
        write_members(path, variant)
        got = load_or_error(path)
        if not isinstance(got, CheckpointError):
            got.step(np.ones(3), target(got))


def test_a_checkpoint_from_before_the_guard_loads_with_a_full_learning_rate(tmp_path):
    """Files written before `lr_backoff` existed hold 6 counters."""
    net = trained()
    path = tmp_path / "old.npz"
    net.save(path)
    arrays = members(path)
    assert arrays["counters"].shape == (7,)
    arrays["counters"] = arrays["counters"][:6]
    write_members(path, arrays)
    loaded = rtrl_edge.OnlineRNN.load(path)
    assert loaded.stats["lr_scale"] == 1.0 and loaded.stats["steps"] == net.stats["steps"]


@pytest.mark.parametrize("kw", [dict(), dict(learner="snap2"), dict(cell="diag"),
                                dict(cell="gru"), dict(cell="gru", learner="snap2"),
                                dict(cell="gru", loss="softmax")],
                         ids=["elman", "masked", "diag", "gru", "gru-masked", "gru-softmax"])
def test_a_checkpoint_from_before_init_loads_as_gaussian(tmp_path, kw):
    """Files written before the `init` option hold no "init" in their
    configuration: they load as "gaussian", the initialisation they were
    built with, whatever today's default, and with every value saved."""
    net = trained(init="gaussian", **kw)
    path = tmp_path / "old.npz"
    net.save(path)
    arrays = members(path)
    cfg = json.loads(str(arrays["config"]))
    del cfg["init"]
    arrays["config"] = np.array(json.dumps(cfg, sort_keys=True))
    write_members(path, arrays)
    loaded = rtrl_edge.OnlineRNN.load(path)
    assert loaded.config["init"] == "gaussian"
    assert loaded.config == net.config
    assert same_model(loaded, net)
    x = np.ones(3)
    np.testing.assert_array_equal(loaded.step(x, target(net)), net.step(x, target(net)))


def test_an_impossible_learning_rate_backoff_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    trained().save(path)
    arrays = members(path)
    arrays["counters"][6] = 10 ** 6
    write_members(path, arrays)
    with pytest.raises(CheckpointError, match="lr_backoff"):
        rtrl_edge.OnlineRNN.load(path)


# ---------------------------------------------------------------- zip bomb

BOMB_SCRIPT = r"""
import resource, sys
import rtrl_edge
from rtrl_edge.checkpoint import CheckpointError
soft = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
try:
    rtrl_edge.OnlineRNN.load(sys.argv[1])
except CheckpointError as exc:
    print("CheckpointError", exc)
except MemoryError:
    print("MemoryError")
# VmHWM, not ru_maxrss: ru_maxrss is inherited across exec from a large parent
with open("/proc/self/status") as f:
    print("maxrss_kib", f.read().split("VmHWM:")[1].split()[0])
"""


def make_bomb(path, inflated_bytes, net):
    """A valid checkpoint whose `P` member is replaced by a deflated member
    declaring `inflated_bytes` of zeros (zeros compress ~1000:1)."""
    good = path.with_suffix(".good.npz")
    net.save(good)
    arrays = members(good)
    count = inflated_bytes // 4
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (count,)})
    with zipfile.ZipFile(path, "w") as zf:
        for name, a in arrays.items():
            if name == "P":
                continue
            buf = io.BytesIO()
            np.save(buf, a)
            zf.writestr(name + ".npy", buf.getvalue())
        info = zipfile.ZipInfo("P.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            f.write(header.getvalue())
            chunk = bytes(1 << 24)
            left = count * 4
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
    return path


def test_a_zip_bomb_is_refused_within_a_memory_ceiling(tmp_path):
    """A 1 GB member deflated to ~1 MB: refused from the directory alone.
    The loader runs under an address-space limit of what it needs to start
    plus 256 MiB; before validation it read every member and hit
    MemoryError (6.2 GB for a 3 MB bomb without a limit)."""
    bomb = make_bomb(tmp_path / "bomb.npz", 10 ** 9, trained())
    assert bomb.stat().st_size < 4 * 10 ** 6
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))
    probe = subprocess.run([sys.executable, "-c",
                            "import rtrl_edge, resource; print(open('/proc/self/status')"
                            ".read().split('VmSize:')[1].split()[0])"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    ceiling = (int(probe.stdout) + 256 * 1024) * 1024
    run = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(bomb), str(ceiling)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("CheckpointError"), run.stdout
    assert "compressed" in run.stdout
    rss_kib = int(run.stdout.split("maxrss_kib")[1])
    assert rss_kib < 256 * 1024


# ---------------------------------------------------------------- authenticity

def forge(path, change):
    """Edit a checkpoint and recompute its (unkeyed) checksum, as anyone can."""
    arrays = members(path)
    change(arrays)
    arrays.pop("mac", None)
    write_members(path, arrays)


def test_without_a_key_a_forged_nan_model_is_still_refused(tmp_path):
    """The forged NaN checkpoint used to resume with rc 0 and write NaN
    checkpoints back: non-finite parameters are refused whatever the hash."""
    path = tmp_path / "m.npz"
    trained().save(path)
    forge(path, lambda a: a["theta"].__setitem__(slice(None), np.nan))
    with pytest.raises(CheckpointError, match="non-finite"):
        rtrl_edge.OnlineRNN.load(path)


def test_without_a_key_a_finite_forgery_loads(tmp_path):
    """What the checksum alone does not do (documented): a forger who
    recomputes it can change finite values."""
    path = tmp_path / "m.npz"
    trained().save(path)
    forge(path, lambda a: a["theta"].__setitem__(0, 42.0))
    assert rtrl_edge.OnlineRNN.load(path).params["W_rec"][0, 0] == 42.0


def test_with_a_key_only_files_written_with_it_load(tmp_path):
    net = trained()
    signed = tmp_path / "signed.npz"
    net.save(signed, key=KEY)
    assert same_model(rtrl_edge.OnlineRNN.load(signed, key=KEY), net)
    assert same_model(rtrl_edge.OnlineRNN.load(signed), net)    # checksum still holds

    forged = tmp_path / "forged.npz"
    forged.write_bytes(signed.read_bytes())
    forge(forged, lambda a: a["theta"].__setitem__(0, 42.0))
    with pytest.raises(CheckpointError, match="not signed"):
        rtrl_edge.OnlineRNN.load(forged, key=KEY)

    resigned = tmp_path / "resigned.npz"
    arrays = members(signed)
    arrays["theta"][0] = 42.0
    arrays.pop("checksum")
    arrays["mac"] = np.array(checkpoint.mac(arrays, b"another key, guessed wrong"))
    write_members(resigned, arrays)
    with pytest.raises(CheckpointError, match="authentication"):
        rtrl_edge.OnlineRNN.load(resigned, key=KEY)

    unsigned = tmp_path / "unsigned.npz"
    net.save(unsigned)
    with pytest.raises(CheckpointError, match="not signed"):
        rtrl_edge.OnlineRNN.load(unsigned, key=KEY)


def test_key_files(tmp_path):
    good = tmp_path / "key"
    good.write_bytes(KEY + b"\n")
    assert checkpoint.read_key(good) == KEY
    short = tmp_path / "short"
    short.write_bytes(b"secret\n")
    with pytest.raises(CheckpointError, match="at least 16"):
        checkpoint.read_key(short)
    with pytest.raises(CheckpointError, match="regular"):
        checkpoint.read_key(tmp_path)
    with pytest.raises(FileNotFoundError):
        checkpoint.read_key(tmp_path / "none")


# ---------------------------------------------------------------- temporaries

def test_stale_temporaries_of_this_checkpoint_only_are_removed(tmp_path):
    path = tmp_path / "run.npz"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".run.npz.{dead.pid}.abc123.tmp"
    live = tmp_path / f".run.npz.{os.getpid()}.def456.tmp"
    other = tmp_path / f".other.npz.{dead.pid}.abc123.tmp"
    unrelated = tmp_path / "notes.tmp"
    for p in (stale, live, other, unrelated):
        p.write_bytes(b"x")
    assert checkpoint.remove_stale_temporaries(path) == 1
    assert not stale.exists() and live.exists() and other.exists() and unrelated.exists()


def test_temporaries_are_named_after_the_checkpoint(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    trained().save(tmp_path / "run.npz")
    assert seen and seen[0].startswith(f".run.npz.{os.getpid()}.") and seen[0].endswith(".tmp")


def test_zlib_is_never_asked_to_inflate(tmp_path, monkeypatch):
    """Reading a valid checkpoint inflates nothing (members are stored)."""
    path = tmp_path / "m.npz"
    net = trained()
    net.save(path)

    def refuse(*a, **k):
        raise AssertionError("decompressobj called")
    monkeypatch.setattr(zlib, "decompressobj", refuse)
    assert same_model(rtrl_edge.OnlineRNN.load(path), net)
