# The n^4 term of exact RTRL, shared by the Elman cell (_kernels.pyx) and the
# GRU (_gru.pyx): P <- dphi * (A @ P), with the gradient c^T P fused in, over
# column ranges that the model's thread pool can take in parallel.
#
# Every column of P is updated from that same column alone, and the kernel's
# arithmetic for a column does not depend on where the range starts (ranges
# are cut at multiples of RTRL_MAX_VL), so any split gives bit-identical
# results to one thread.
from libc.string cimport memset

from rtrl_edge._types cimport *


cdef inline float *part_scratch(RNN *s, int part) noexcept nogil:
    """The product scratch of one part: n4 x RTRL_MAX_TILE floats each."""
    return s.tmp + <Py_ssize_t>part * ((s.n + 3) // 4 * 4) * RTRL_MAX_TILE


cdef inline void sens_columns(RNN *s, const float *a, int lda, Py_ssize_t lo, Py_ssize_t hi,
                              float *t, bint contract) noexcept nogil:
    """P[:, lo:hi] <- dphi * (a @ P[:, lo:hi]), and grad[lo:hi] = c^T P[:, lo:hi]
    with `contract` (columns past n_core are the row stride's padding: left
    zero, their gradient entries are the readout's and untouched)."""
    cdef Py_ssize_t real = hi if hi < s.n_core else s.n_core
    if real < lo:
        real = lo
    if contract:
        memset(s.grad + lo, 0, (real - lo) * sizeof(float))
    s.simd.sens(a, lda, s.P + lo, s.ldp, s.n, <int>(hi - lo), <int>(real - lo), s.dphi,
                s.c, s.grad + lo, contract, t)
