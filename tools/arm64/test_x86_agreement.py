"""Run under arm64 by tools/arm64-check: the arm64 build's float32 results
agree with the x86-64 build's on the same inputs, within the test suite's
tolerances (see agreement.py).  RTRL_EDGE_ARM64_X86_RESULTS lists the x86
result files (os.pathsep-separated), written beforehand by
``agreement.py compute`` on the x86 build."""
import os
import platform
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # agreement, arm64_plugin
import agreement  # noqa: E402
import arm64_plugin  # noqa: E402
from rtrl_edge import _kernels  # noqa: E402

FILES = [p for p in os.environ.get("RTRL_EDGE_ARM64_X86_RESULTS", "").split(os.pathsep) if p]


@pytest.fixture(scope="module")
def arm64_results():
    assert platform.machine() == "aarch64", platform.machine()
    first = dict(np.load(FILES[0]))
    inputs = {k: v for k, v in first.items() if k.startswith("in/")}
    got = agreement.compute(inputs, checkpoint=first["ckpt/file"].tobytes())
    out = os.environ.get("RTRL_EDGE_ARM64_RESULTS_OUT")
    if out:
        np.savez(out, **got, **inputs)
    return got


@pytest.mark.skipif(not FILES, reason="no x86 results given (RTRL_EDGE_ARM64_X86_RESULTS)")
@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.basename(p))
def test_arm64_agrees_with_x86(arm64_results, path):
    ref = dict(np.load(path))
    inputs = {k: v for k, v in ref.items() if k.startswith("in/")}
    # this file's own checkpoint, loaded and trained on by the arm64 build
    got = dict(arm64_results, **agreement.checkpoint_case(inputs, ref["ckpt/file"].tobytes()))
    rows = agreement.compare(got, ref)
    label = f"arm64 ({_kernels.product_isa()}) vs {ref['meta/machine']} ({ref['meta/isa']})"
    arm64_plugin.AGREEMENT.append((label, agreement.summarise(rows)))
    bad = [r for r in rows if not r[4]]
    assert not bad, "\n".join(f"{k} [{kind}]: relative error {e:.3g}, tolerance used {u:.3g}"
                              for k, kind, e, u, _ in bad)
