"""Regenerate the compact FSDD copy in this folder from FSDD's WAV files.

    python benchmarks/data/fsdd/make_fsdd.py PATH/TO/free-spoken-digit-dataset/recordings

writes, beside this script (or into --out DIR):

- ``fsdd_mulaw.xz``: every recording as ITU-T G.711 mu-law bytes (one byte a
  sample, 8 kHz), concatenated in index order, xz-compressed (LZMA2, preset
  9e);
- ``fsdd_index.csv``: one row per recording, ``digit,speaker,index,offset,
  length``, offsets and lengths in samples, sorted by (digit, speaker, index).

The encoder is `rtrl_edge.apps.speech.mulaw_encode` (the package must be
importable: run from the repository root with it built in place, or
installed), so the file and its loader share one definition of the format.
Every WAV must be mono 16-bit PCM at 8 kHz, named digit_speaker_index.wav.
The result is checked by decoding it again before it is written.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import lzma
import sys
from pathlib import Path

import numpy as np

from rtrl_edge.apps.speech import (AUDIO_FILE, INDEX_COLUMNS, INDEX_FILE, SAMPLE_RATE,
                                   load_wav_folder, mulaw_decode, mulaw_encode)


def build(wav_dir: Path, out_dir: Path) -> dict:
    folder = wav_dir / "recordings" if (wav_dir / "recordings").is_dir() else wav_dir
    try:
        recordings = load_wav_folder(folder)
    except ValueError as exc:
        raise SystemExit(f"make_fsdd: {exc}") from None
    if not recordings:
        raise SystemExit(f"make_fsdd: {folder}: no files named digit_speaker_index.wav")
    codes, rows, offset = [], [], 0
    for r in recordings:
        codes.append(mulaw_encode(r.audio))
        rows.append((r.digit, r.speaker, r.index, offset, len(r.audio)))
        offset += len(r.audio)
    raw = np.concatenate(codes).tobytes()
    packed = lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                           preset=9 | lzma.PRESET_EXTREME)
    # check before writing: decoding gives every recording back within G.711's error
    back = mulaw_decode(np.frombuffer(lzma.decompress(packed), np.uint8))
    for r, (_, _, _, off, n) in zip(recordings, rows):
        x = r.audio.astype(np.int64)
        if np.any(np.abs(back[off:off + n] - x) > (np.abs(x) + 132) / 32):
            raise SystemExit(f"make_fsdd: round trip failed for {r.digit}_{r.speaker}_{r.index}")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    writer.writerows(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / AUDIO_FILE).write_bytes(packed)
    (out_dir / INDEX_FILE).write_text(text.getvalue())
    return dict(recordings=len(rows), samples=offset, seconds=offset / SAMPLE_RATE,
                xz_bytes=len(packed), index_bytes=len(text.getvalue()),
                sha256_mulaw=hashlib.sha256(raw).hexdigest())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav_dir", type=Path, help="folder of FSDD's WAV files (or its parent)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="where to write the two files (default: beside this script)")
    args = parser.parse_args(argv)
    info = build(args.wav_dir, args.out)
    print(f"{info['recordings']} recordings, {info['samples']:,} samples "
          f"({info['seconds']:.0f} s); {AUDIO_FILE} {info['xz_bytes']:,} bytes, "
          f"{INDEX_FILE} {info['index_bytes']:,} bytes; sha256 of the mu-law bytes "
          f"{info['sha256_mulaw']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
