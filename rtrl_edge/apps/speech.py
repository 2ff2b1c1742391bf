"""Spoken-digit recognition on the Free Spoken Digit Dataset (FSDD).

Layers, top to bottom:

- ``train_and_evaluate``: extract features, train an ``OnlineRNN(loss="softmax",
  n_out=10)`` with `apps.classify.fit`, score held-out recordings; used by
  ``rtrl-edge demo speech`` and reusable as it is.
- ``make_model`` / ``DEFAULTS``: the chosen configuration (a GRU trained by
  truncated BPTT whose window covers the longest utterance, so each
  utterance's gradient is exact; Adam; inputs normalised online).
- ``features(recordings, frontend)``: every recording through `LogMel`.
- ``load_fsdd`` / ``official_split`` / ``speaker_folds``: the recordings, from
  the compact copy shipped in ``benchmarks/data/fsdd`` or from a folder of the
  original WAV files.
- ``LogMel``: a streaming log-mel front end.  Audio arrives in chunks of any
  size; each completed frame is computed at once into preallocated buffers,
  so the same object serves a live microphone stream.
- ``mulaw_encode`` / ``mulaw_decode`` / ``read_wav``: the storage format of
  the compact copy (ITU-T G.711 mu-law, 8 bits a sample) and the WAV reader.

A live stream uses the same two objects (``net`` trained as above)::

    frontend = make_frontend()
    for chunk in microphone:                # int16 at 8 kHz, any chunk size
        for x in frontend.push(chunk):      # the frames this chunk completes
            probs = net.predict(x)          # class probabilities so far
    # at the end of an utterance: frontend.reset(); net.reset_state()

Configurations tried (official split, test accuracy after the last epoch;
one recording is 0.33 points, and the figure moves by about a point from
epoch to epoch; MFCC 20 of 32 mel bands, Adam, clip 1, 8 epochs, inputs
normalised, unless stated; µs per frame of learning on 2 shared cores):

======================================  =====================  ========  =========
model                                   test accuracy (%)      µs/frame  memory
======================================  =====================  ========  =========
GRU 64, tbptt (window = longest), 3e-3  98.7, 97.7, 98.3 (a)   15-25     715 KB
  the same, lr 1.5e-3                   98.7, 99.0, 100 (b)
  the same, last 2 epochs at lr / 10    99.7, 99.3, 98.7 (b,c)
GRU 64, snap1, 3e-3                     99.3, 98.7, 98.0 (b)   13        414 KB
GRU 64, uoro, 3e-3                      46.0                   17        415 KB
GRU 32, tbptt, 3e-3                     99.0                   7.5       309 KB
GRU 16, tbptt, 3e-3                     99.0 (95-96 before)    3.7       150 KB
GRU 16, rtrl, 3e-3 (same gradient)      95.7                   23        192 KB
GRU 128, tbptt, log-mel 32, 6 epochs    96.3                   61-67
Elman 64, tbptt, 1e-3                   78.7                   5         262 KB
GRU 64, tbptt, 1e-2 / 1e-3, log-mel 32  84.0 / 98.3 (6 ep.)
GRU 64, tbptt, log-mel 32, no normaliser  88.7 (6 ep.)
======================================  =====================  ========  =========

(a) `rtrl-edge demo speech --seed 0, 1, 2`; (b) seeds 0-2 with another
shuffling order than the demo's; (c) needs the input normaliser carried over
to a model with the lower lr, which OnlineRNN has no public way to do, so it
is not used.  Front ends (GRU 64 tbptt, 6 epochs, seed 0): log-mel 20 / 32 /
40 bands 97.7 / 99.0 / 97.7, MFCC 13 / 20 of 32 96.7 / 99.3 (8 epochs, seeds
0-2: 99.7, 97.3, 99.0 / 99.3, 99.0, 98.7); floor 1e-4 / 1e-8 98.0 / 96.3;
mel bands from 50 Hz 97.0.  The training accuracy of MFCCs is consistently
higher (98.5-99.1 % online against 97.5-98 % for log-mel), hence the
default.  Leave one speaker out is much harder: 68.9 % with the defaults
(43-89 % by speaker), and single folds move by 10-20 points with small
changes of the configuration.

The recordings are by Z. Jackson, C. Souza, J. Flaks, Y. Pan, H. Nicolas and
A. Thite (2018), https://github.com/Jakobovski/free-spoken-digit-dataset,
doi:10.5281/zenodo.1342401, under CC BY-SA 4.0; features derived from them
carry the same licence (``benchmarks/data/fsdd/README.md``).
"""
from __future__ import annotations

import csv
import lzma
import os
import re
import time
import wave
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..model import OnlineRNN
from . import classify

__all__ = [
    "SAMPLE_RATE", "FSDD_URL", "Recording", "LogMel", "mulaw_encode", "mulaw_decode",
    "read_wav", "find_fsdd", "load_fsdd", "load_wav_folder", "official_split",
    "speaker_folds", "features",
    "DEFAULTS", "make_frontend", "make_model", "train_and_evaluate", "Result",
]

SAMPLE_RATE = 8000
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset"
#: The compact copy: all recordings' mu-law bytes, concatenated in index order
#: and xz-compressed, and the index (digit, speaker, index, offset, length).
AUDIO_FILE = "fsdd_mulaw.xz"
INDEX_FILE = "fsdd_index.csv"
INDEX_COLUMNS = ("digit", "speaker", "index", "offset", "length")
ENV_VAR = "RTRL_EDGE_FSDD"
_WAV_NAME = re.compile(r"([0-9])_([A-Za-z]+)_([0-9]+)\.wav\Z")


class Recording(NamedTuple):
    """One FSDD recording: the spoken digit, the speaker, the take (0-49) and
    the audio, int16 at 8 kHz."""
    digit: int
    speaker: str
    index: int
    audio: np.ndarray


# --------------------------------------------------------------------------
# G.711 mu-law and WAV files

_BIAS = 0x84      # G.711's bias, in 16-bit units
_CLIP = 32635     # largest magnitude before the bias


def mulaw_encode(x) -> np.ndarray:
    """ITU-T G.711 mu-law encoding of int16 samples (any shape) to uint8.

    The segment-and-step code of the classic Sun ``g711.c`` (``linear2ulaw``
    on 16-bit input): magnitudes are clipped to 32635, biased by 132, and
    coded as a 3-bit segment and a 4-bit step, the byte inverted.  Decoding
    (`mulaw_decode`) returns the middle of the step, so the error is at most
    (|x| + 132) / 32 in 16-bit units: 4 near silence, 1028 at full scale.
    """
    x = np.asarray(x)
    if x.dtype != np.int16:
        raise ValueError(f"mulaw_encode expects int16 samples, got dtype {x.dtype}")
    v = x.astype(np.int32)
    mag = np.minimum(np.abs(v), _CLIP) + _BIAS               # 132 .. 32767
    seg = np.frexp(mag.astype(np.float64))[1] - 8            # floor(log2(mag)) - 7: 0..7
    code = (seg << 4) | ((mag >> (seg + 3)) & 0xF)
    return np.where(v < 0, code ^ 0x7F, code ^ 0xFF).astype(np.uint8)


def _mulaw_table() -> np.ndarray:
    u = ~np.arange(256) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


_MULAW_TABLE = _mulaw_table()


def mulaw_decode(u) -> np.ndarray:
    """int16 samples from G.711 mu-law bytes (uint8, any shape)."""
    u = np.asarray(u)
    if u.dtype != np.uint8:
        raise ValueError(f"mulaw_decode expects uint8 codes, got dtype {u.dtype}")
    return _MULAW_TABLE[u]


def read_wav(path) -> Tuple[int, np.ndarray]:
    """(sample rate, int16 samples) of a mono 16-bit PCM WAV file; anything
    else raises ValueError naming the file."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ValueError(f"{path}: expected mono 16-bit PCM, got "
                                 f"{w.getnchannels()} channel(s) of {8 * w.getsampwidth()} bits")
            rate = w.getframerate()
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from None
    return rate, audio.astype(np.int16)


# --------------------------------------------------------------------------
# Finding and loading the recordings

def _repo_root() -> Path:
    from .. import __file__ as package_file
    return Path(package_file).resolve().parents[1]


def find_fsdd(data=None) -> Path:
    """The folder to load FSDD from: ``data`` if given (a folder holding the
    compact copy, or FSDD's WAV files, directly or in ``recordings/``), else
    ``$RTRL_EDGE_FSDD``, else ``benchmarks/data/fsdd`` under the current
    directory, then under the checkout the package was imported from.
    Raises FileNotFoundError saying where to get FSDD."""
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"{data}: no such folder")
        found = _recordings_in(root)
        if found is None:
            raise FileNotFoundError(
                f"{data}: no FSDD recordings there (expected {INDEX_FILE} and "
                f"{AUDIO_FILE}, or files named digit_speaker_index.wav)")
        return found
    candidates = []
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates += [Path.cwd() / "benchmarks" / "data" / "fsdd",
                   _repo_root() / "benchmarks" / "data" / "fsdd"]
    for root in candidates:
        found = _recordings_in(root) if root.is_dir() else None
        if found is not None:
            return found
    raise FileNotFoundError(
        "FSDD recordings not found (looked in " + ", ".join(str(c) for c in candidates) +
        f"): run from a checkout of rtrl_edge, which ships them in benchmarks/data/fsdd, "
        f"or download FSDD from {FSDD_URL} and pass --data DIR (or set {ENV_VAR})")


def _recordings_in(root: Path) -> Optional[Path]:
    if (root / INDEX_FILE).is_file() and (root / AUDIO_FILE).is_file():
        return root
    for folder in (root, root / "recordings"):
        if folder.is_dir() and any(_WAV_NAME.match(p.name) for p in folder.glob("*.wav")):
            return folder
    return None


def load_fsdd(root=None) -> List[Recording]:
    """Every recording, sorted by (digit, speaker, index): from the compact
    copy (mu-law, so within G.711's quantisation error of the original; the
    audio arrays are views of one decoded array) or from a folder of FSDD's
    WAV files (exact).  ``root`` as in `find_fsdd`."""
    folder = find_fsdd(root)
    if (folder / INDEX_FILE).is_file() and (folder / AUDIO_FILE).is_file():
        return _load_compact(folder)
    return load_wav_folder(folder)


def _load_compact(folder: Path) -> List[Recording]:
    index_path = folder / INDEX_FILE
    with open(index_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != INDEX_COLUMNS:
        raise ValueError(f"{index_path}: expected the header {','.join(INDEX_COLUMNS)}")
    try:
        codes = np.frombuffer(lzma.decompress((folder / AUDIO_FILE).read_bytes()), np.uint8)
    except lzma.LZMAError as exc:
        raise ValueError(f"{folder / AUDIO_FILE}: not a readable xz file ({exc})") from None
    audio = mulaw_decode(codes)
    out = []
    for line, row in enumerate(rows[1:], 2):
        try:
            digit, speaker, index, offset, length = (int(row[0]), row[1], int(row[2]),
                                                     int(row[3]), int(row[4]))
        except (ValueError, IndexError):
            raise ValueError(f"{index_path}, line {line}: expected "
                             f"{','.join(INDEX_COLUMNS)}, got {','.join(row)!r}") from None
        if offset < 0 or length < 1 or offset + length > len(audio):
            raise ValueError(f"{index_path}, line {line}: samples {offset}..{offset + length} "
                             f"outside the {len(audio)} in {AUDIO_FILE}")
        out.append(Recording(digit, speaker, index, audio[offset:offset + length]))
    return sorted(out, key=lambda r: (r.digit, r.speaker, r.index))


def load_wav_folder(folder) -> List[Recording]:
    """The recordings of one folder of FSDD WAV files (``digit_speaker_index.wav``;
    other files are ignored), sorted by (digit, speaker, index); every file
    must be mono 16-bit PCM at 8 kHz (ValueError naming the file if not)."""
    folder = Path(folder)
    out = []
    for path in sorted(folder.glob("*.wav")):
        m = _WAV_NAME.match(path.name)
        if m is None:
            continue
        rate, audio = read_wav(path)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz, got {rate} Hz")
        if len(audio) == 0:
            raise ValueError(f"{path}: no samples")
        out.append(Recording(int(m.group(1)), m.group(2), int(m.group(3)), audio))
    return sorted(out, key=lambda r: (r.digit, r.speaker, r.index))


def official_split(recordings: Sequence[Recording]) -> Tuple[List[Recording], List[Recording]]:
    """(train, test): takes 5-49 of every digit and speaker train, 0-4 test
    (FSDD's own split: 2,700 and 300 of the 3,000)."""
    train = [r for r in recordings if r.index >= 5]
    test = [r for r in recordings if r.index < 5]
    return train, test


def speaker_folds(recordings: Sequence[Recording]) -> List[Tuple[str, List[Recording],
                                                                 List[Recording]]]:
    """Leave one speaker out: (speaker, train = every other speaker, test =
    that speaker), one fold per speaker in sorted order."""
    speakers = sorted({r.speaker for r in recordings})
    return [(s, [r for r in recordings if r.speaker != s],
             [r for r in recordings if r.speaker == s]) for s in speakers]


# --------------------------------------------------------------------------
# The streaming front end

def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float,
                   f_max: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64: HTK triangles, peak 1, on the mel
    scale 2595 log10(1 + f / 700), their corners ``n_mels + 2`` points evenly
    spaced in mel from f_min to f_max, evaluated at each FFT bin's frequency."""
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    corners = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lo, mid, hi = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float64: the orthonormal DCT-II, first n_out rows."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    d[0] /= np.sqrt(2.0)
    return d


class LogMel:
    """Streaming log-mel filterbank energies (or MFCCs), frame by frame.

    Frame t covers samples ``[t*hop, t*hop + win)`` of the stream since the
    last `reset` (no padding: a stream of N >= win samples gives
    ``1 + (N - win) // hop`` frames, and a frame appears as soon as its last
    sample is pushed).  Each frame::

        x   = samples / 32768 (int16) or as given (float), times a Hann window
              w[i] = 0.5 - 0.5 cos(2 pi i / win)  (periodic), i < win
        P   = |rfft(x, n_fft)|^2                                  (n_fft/2+1,)
        out = log(F @ P + floor)        F: `mel_filterbank`        (n_mels,)
        out = D @ out                   if n_mfcc: `dct_matrix`    (n_mfcc,)

    Defaults: 25 ms windows every 10 ms at 8 kHz (win 200, hop 80), n_fft
    256, 32 mel bands from 0 to 4 kHz, log-mel out (``n_mfcc=20`` gives the
    first 20 MFCCs instead, what `DEFAULTS` uses).  The floor 1e-6 on the mel
    energies (of samples scaled to [-1, 1)) puts digital silence at
    log(1e-6) = -13.8 rather than -inf.  Outputs are float32, computed in
    float64.

    Every buffer is allocated here: a mirrored ring of ``2*win`` samples (the
    window is always one contiguous slice of it), the windowed frame, the
    spectrum, its power and the mel energies.  ``push(chunk)`` copies the
    chunk into the ring piece by piece and computes each frame it completes
    with ``out=`` numpy calls; only the result array is new, and
    ``push(chunk, out=buf)`` writes into the caller's instead.
    """

    def __init__(self, *, sample_rate: int = SAMPLE_RATE, win: int = 200, hop: int = 80,
                 n_fft: int = 256, n_mels: int = 32, f_min: float = 0.0,
                 f_max: Optional[float] = None, n_mfcc: Optional[int] = None,
                 floor: float = 1e-6):
        if not (isinstance(win, int) and isinstance(hop, int) and isinstance(n_fft, int)):
            raise ValueError("win, hop and n_fft must be integers")
        if not 1 <= hop <= win <= n_fft:
            raise ValueError(f"need 1 <= hop <= win <= n_fft, got hop={hop}, win={win}, "
                             f"n_fft={n_fft}")
        f_max = sample_rate / 2 if f_max is None else float(f_max)
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, "
                             f"f_max={f_max}")
        if n_mels < 1 or (n_mfcc is not None and not 1 <= n_mfcc <= n_mels):
            raise ValueError(f"need n_mels >= 1 and 1 <= n_mfcc <= n_mels, got "
                             f"n_mels={n_mels}, n_mfcc={n_mfcc}")
        if not floor > 0:
            raise ValueError(f"floor must be > 0, got {floor}")
        self.sample_rate, self.win, self.hop, self.n_fft = sample_rate, win, hop, n_fft
        self.n_mels, self.n_mfcc, self.floor = n_mels, n_mfcc, float(floor)
        self.f_min, self.f_max = float(f_min), f_max
        self.n_features = n_mels if n_mfcc is None else n_mfcc
        self.window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
        n_bins = n_fft // 2 + 1
        # (n_bins, n_mels) and (n_mels, n_mfcc): row vector @ matrix, contiguous
        self._fbank_t = np.ascontiguousarray(mel_filterbank(n_mels, n_fft, sample_rate,
                                                            self.f_min, f_max).T)
        self._dct_t = None if n_mfcc is None else np.ascontiguousarray(
            dct_matrix(n_mfcc, n_mels).T)
        self._ring = np.zeros(2 * win)                  # ring[i] == ring[i + win]
        self._frame = np.zeros(n_fft)                   # windowed samples, zero-padded
        self._spec = np.zeros(n_bins, dtype=np.complex128)
        self._spec_parts = self._spec.view(np.float64)  # re, im, re, im, ...
        self._squares = np.zeros(2 * n_bins)
        self._power = np.zeros(n_bins)
        self._mel = np.zeros(n_mels)
        self._write = 0          # next ring slot (mod win): the oldest sample's
        self._filled = 0         # samples in the ring, up to win
        self._until = win        # samples still needed to complete the next frame
        self.frames = 0          # frames produced since the last reset

    def reset(self) -> None:
        """Forget the stream: the next sample starts a new utterance."""
        self._ring[:] = 0.0
        self._write = 0
        self._filled = 0
        self._until = self.win
        self.frames = 0

    def frames_for(self, n_samples: int) -> int:
        """How many frames the next ``n_samples`` samples complete."""
        if n_samples < self._until:
            return 0
        return 1 + (n_samples - self._until) // self.hop

    def push(self, chunk, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Feed a chunk of samples (1-D, int16 or float; any length, even 0);
        returns the frames it completes, (k, n_features) float32 -- a new
        array, or a view of ``out[:k]`` if given (float32, at least k rows;
        ``frames_for(len(chunk))`` is k)."""
        chunk = np.asarray(chunk)
        if chunk.ndim != 1:
            raise ValueError(f"push expects a 1-D chunk of samples, got shape {chunk.shape}")
        if chunk.dtype == np.int16:
            scale = 1.0 / 32768.0
        elif chunk.dtype.kind == "f":
            scale = 1.0
        else:
            raise ValueError(f"push expects int16 or float samples, got dtype {chunk.dtype}")
        k = self.frames_for(len(chunk))
        if out is None:
            out = np.empty((k, self.n_features), dtype=np.float32)
        elif (out.dtype != np.float32 or out.ndim != 2 or out.shape[0] < k
              or out.shape[1] != self.n_features):
            raise ValueError(f"out must be float32 of shape (>= {k}, {self.n_features}), got "
                             f"{out.dtype} {out.shape}")
        win, ring = self.win, self._ring
        done = 0
        i, n = 0, len(chunk)
        while i < n:
            take = min(self._until, n - i)
            w = self._write
            first = min(take, win - w)          # up to the ring's end, then wrap
            seg = chunk[i:i + first]
            np.multiply(seg, scale, out=ring[w:w + first])
            np.multiply(seg, scale, out=ring[w + win:w + win + first])
            if take > first:
                seg = chunk[i + first:i + take]
                np.multiply(seg, scale, out=ring[:take - first])
                np.multiply(seg, scale, out=ring[win:win + take - first])
            self._write = (w + take) % win
            self._until -= take
            i += take
            if self._until == 0:
                self._compute(ring[self._write:self._write + win], out[done])
                done += 1
                self.frames += 1
                self._until = self.hop
        return out[:done]

    def _compute(self, samples: np.ndarray, row_out: np.ndarray) -> None:
        """One frame from ``win`` samples (oldest first) into ``row_out``."""
        np.multiply(samples, self.window, out=self._frame[:self.win])
        np.fft.rfft(self._frame, out=self._spec)
        np.multiply(self._spec_parts, self._spec_parts, out=self._squares)
        np.add(self._squares[0::2], self._squares[1::2], out=self._power)   # |X|^2
        np.dot(self._power, self._fbank_t, out=self._mel)
        np.add(self._mel, self.floor, out=self._mel)
        if self._dct_t is None:
            np.log(self._mel, out=row_out)              # float64 work, float32 result
        else:
            np.log(self._mel, out=self._mel)
            np.matmul(self._mel, self._dct_t, out=row_out)

    def transform(self, audio) -> np.ndarray:
        """All frames of one utterance, from a fresh stream: (T, n_features)
        float32 (T may be 0 for fewer than ``win`` samples)."""
        self.reset()
        frames = self.push(audio)
        self.reset()
        return frames

    @property
    def memory_bytes(self) -> int:
        """Bytes of every array the front end holds: its buffers, window,
        filterbank and DCT matrices."""
        arrays = [self.window, self._fbank_t, self._ring, self._frame, self._spec,
                  self._squares, self._power, self._mel]
        if self._dct_t is not None:
            arrays.append(self._dct_t)
        return sum(a.nbytes for a in arrays)

    @property
    def config(self) -> dict:
        return dict(sample_rate=self.sample_rate, win=self.win, hop=self.hop,
                    n_fft=self.n_fft, n_mels=self.n_mels, f_min=self.f_min,
                    f_max=self.f_max, n_mfcc=self.n_mfcc, floor=self.floor)


def features(recordings: Sequence[Recording], frontend: Optional[LogMel] = None,
             timing: Optional[classify.Timing] = None) -> List[np.ndarray]:
    """Every recording's frames through ``frontend`` (`make_frontend()` if
    None), each pushed as one chunk from a fresh stream (a recording shorter
    than one window is zero-padded to one frame); ``timing`` adds the front
    end's wall time and frames."""
    frontend = make_frontend() if frontend is None else frontend
    clock = time.perf_counter_ns
    out = []
    for r in recordings:
        t0 = clock()
        xs = frontend.transform(r.audio)
        if len(xs) == 0:     # shorter than one window: zero-padded to one frame
            xs = frontend.transform(np.pad(np.asarray(r.audio), (0, frontend.win - len(r.audio))))
        if timing is not None:
            dt = clock() - t0
            timing.ns += dt
            timing.steps += len(xs)
            timing.per_sequence.append(dt / max(len(xs), 1) / 1e3)
        out.append(xs)
    return out


# --------------------------------------------------------------------------
# The classifier

#: The configuration ``rtrl-edge demo speech`` runs: 20 MFCCs of 32 mel bands,
#: a 64-unit GRU trained by truncated BPTT whose window covers the longest
#: training utterance (so the gradient of each utterance's label is exact),
#: Adam at 3e-3, gradients clipped to norm 1, inputs normalised online,
#: 8 passes over the training set.  Official split, seeds 0-2: 98.7, 97.7 and
#: 98.3 % of the 300 test recordings (the module docstring lists the other
#: configurations tried).
DEFAULTS = dict(n_mels=32, n_mfcc=20, hidden=64, cell="gru", learner="tbptt",
                optimizer="adam", lr=3e-3, clip=1.0, init="uniform", epochs=8)


def make_frontend(n_mels: int = DEFAULTS["n_mels"],
                  n_mfcc: Optional[int] = DEFAULTS["n_mfcc"]) -> LogMel:
    """The front end of `DEFAULTS` (or with other band counts)."""
    return LogMel(n_mels=n_mels, n_mfcc=n_mfcc)


def make_model(n_in: int, *, longest: int, hidden: int = DEFAULTS["hidden"],
               cell: str = DEFAULTS["cell"], learner: str = DEFAULTS["learner"],
               optimizer: str = DEFAULTS["optimizer"], lr: float = DEFAULTS["lr"],
               clip: Optional[float] = DEFAULTS["clip"], init: str = DEFAULTS["init"],
               seed: int = 0, window: Optional[int] = None) -> OnlineRNN:
    """``OnlineRNN(n_in, hidden, 10, loss="softmax", normalize=True, ...)``;
    with ``learner="tbptt"`` the window is ``window`` or, by default,
    ``longest`` (frames of the longest training utterance), which makes each
    utterance's gradient exact.  Raises ValueError for a bad combination."""
    if learner == "tbptt":
        window = longest if window is None else window
    return OnlineRNN(n_in, hidden, 10, loss="softmax", cell=cell, learner=learner,
                     optimizer=optimizer, lr=lr, clip=clip, normalize=True, init=init,
                     seed=seed, window=window if learner == "tbptt" else None)


class Result(NamedTuple):
    """What `train_and_evaluate` measured."""
    accuracy: float                  # on the test recordings
    labels: np.ndarray               # (n_test,) true digits
    predicted: np.ndarray            # (n_test,) predicted digits
    epoch_accuracy: List[float]      # online accuracy of each training pass
    learn: classify.Timing           # model calls while training, per frame
    predict: classify.Timing         # model calls while testing, per frame
    net: OnlineRNN


def train_and_evaluate(train_x: Sequence[np.ndarray], train_y: Sequence[int],
                       test_x: Sequence[np.ndarray], test_y: Sequence[int], *,
                       epochs: int = DEFAULTS["epochs"], seed: int = 0,
                       progress: Optional[Callable[[int, int, float], None]] = None,
                       **model) -> Result:
    """Train a fresh `make_model` (``**model``: its keywords) on feature
    sequences with `classify.fit`, label on the last frame, ``epochs``
    online passes in seeded orders; then classify the test sequences.
    ``progress`` is `classify.fit`'s."""
    if not train_x or not test_x:
        raise ValueError("need at least one training and one test recording")
    longest = max(len(x) for x in train_x)
    net = make_model(train_x[0].shape[1], longest=longest, seed=seed, **model)
    learn, predict = classify.Timing(), classify.Timing()
    epoch_acc = classify.fit(net, train_x, train_y, epochs=epochs, seed=seed, timing=learn,
                             progress=progress)
    predicted = classify.predict_all(net, test_x, timing=predict)
    labels = np.asarray(test_y, dtype=np.int64)
    return Result(float(np.mean(predicted == labels)), labels, predicted, epoch_acc,
                  learn, predict, net)
