"""Extract the 8 x 8 handwritten digits shipped as ``rtrl_edge/data/digits_8x8.npz``.

Run once, from the repository root, with scikit-learn installed (it is needed
here only, never by the package)::

    pip install scikit-learn
    python benchmarks/data/make_digits.py            # writes rtrl_edge/data/digits_8x8.npz
    python benchmarks/data/make_digits.py --check    # compares with the shipped file

Source: ``sklearn.datasets.load_digits()``, scikit-learn's bundled copy of the
test set of the UCI "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin, C. Kaynak, 1998; doi:10.24432/C50P49; CC BY 4.0): 1,797 images
of 8 x 8 integer pixels in 0..16, one label 0..9 each.  The file holds them
unchanged, in scikit-learn's order:

- ``images``: uint8 (1797, 8, 8), pixel values 0..16 (row 0 is the top row);
- ``labels``: uint8 (1797,), the digit 0..9.

No split is stored: ``rtrl_edge.apps.digits.split()`` computes it (a frozen
``numpy.random.RandomState(0)`` permutation); this script checks that it is
the split of scikit-learn's ``train_test_split(..., test_size=0.25,
random_state=0)``.  The file is compressed (about 25 kB); its bytes carry a
zip timestamp, so compare contents (``--check``), not file hashes.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "rtrl_edge" / "data" / "digits_8x8.npz"


def extract():
    """(images uint8 (1797, 8, 8), labels uint8 (1797,)) from scikit-learn."""
    from sklearn.datasets import load_digits
    d = load_digits()
    images, labels = np.asarray(d.images), np.asarray(d.target)
    if images.shape != (1797, 8, 8) or labels.shape != (1797,):
        raise SystemExit(f"unexpected shapes {images.shape}, {labels.shape}")
    if not (np.all(images == np.round(images)) and images.min() >= 0 and images.max() <= 16):
        raise SystemExit("pixels are not integers in 0..16")
    if set(np.unique(labels)) != set(range(10)):
        raise SystemExit("labels are not the digits 0..9")
    return images.astype(np.uint8), labels.astype(np.uint8)


def check_split(labels):
    """The documented split is scikit-learn's train_test_split(test_size=0.25,
    random_state=0)."""
    from sklearn.model_selection import train_test_split
    sys.path.insert(0, str(ROOT))
    from rtrl_edge.apps.digits import split
    train, test = split()
    ref_train, ref_test = train_test_split(np.arange(len(labels)), test_size=0.25,
                                           random_state=0)
    if not (np.array_equal(train, ref_train) and np.array_equal(test, ref_test)):
        raise SystemExit("rtrl_edge.apps.digits.split() differs from train_test_split")


def digest(images, labels) -> str:
    """SHA-256 of the arrays' bytes (what tests/test_app_digits.py pins)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, np.uint8).tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare scikit-learn's copy with the shipped file; write nothing")
    args = parser.parse_args(argv)
    images, labels = extract()
    check_split(labels)
    if args.check:
        with np.load(OUT, allow_pickle=False) as f:
            same = (np.array_equal(f["images"], images) and np.array_equal(f["labels"], labels)
                    and f["images"].dtype == np.uint8 and f["labels"].dtype == np.uint8)
        print(f"{OUT.relative_to(ROOT)}: {'identical to' if same else 'DIFFERS from'} "
              f"scikit-learn's copy")
        return 0 if same else 1
    np.savez_compressed(OUT, images=images, labels=labels)
    import sklearn
    print(f"wrote {OUT.relative_to(ROOT)} from scikit-learn {sklearn.__version__}: "
          f"{OUT.stat().st_size:,} bytes, "
          f"{len(labels)} images, label counts {np.bincount(labels).tolist()}, "
          f"sha256(images, labels) {digest(images, labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
