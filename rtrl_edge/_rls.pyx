# Recursive least squares with forgetting and a bounded covariance, in
# double precision: the update of every linear member of a mixture
# (rtrl_edge.members.LinearRLS).  One pass over P, no allocation.
#
#     Px    = P phi
#     denom = lam + phi . Px                      (> 0 for P positive definite)
#     W    += (Px / denom) (target - phi W)^T
#     P     = (P - Px Px^T / denom) / lam
#     P    *= bound / trace(P)    if trace(P) > bound
#
# The last line keeps the gain finite while the inputs barely vary (plain
# forgetting divides P by lam at every step and grows it without limit).

from libc.math cimport isfinite


def rls_update(double[:, ::1] P, double[:, ::1] W, const double[::1] phi,
               const double[::1] target, double lam, double bound, double[::1] Px):
    """One RLS step in place (module comment); `Px` is scratch of shape (f,).
    Returns False, changing nothing, when the denominator is not a positive
    finite number."""
    cdef Py_ssize_t f = P.shape[0], o = W.shape[1]
    if P.shape[1] != f or W.shape[0] != f or phi.shape[0] != f or target.shape[0] != o \
            or Px.shape[0] != f or f == 0:
        raise ValueError(f"rls_update: shapes P {P.shape[0]}x{P.shape[1]}, W "
                         f"{W.shape[0]}x{W.shape[1]}, phi {phi.shape[0]}, target "
                         f"{target.shape[0]}, Px {Px.shape[0]} do not agree")
    cdef bint done
    with nogil:
        done = _update(P, W, phi, target, lam, bound, Px, f, o)
    return done


cdef bint _update(double[:, ::1] P, double[:, ::1] W, const double[::1] phi,
                  const double[::1] target, double lam, double bound, double[::1] Px,
                  Py_ssize_t f, Py_ssize_t o) noexcept nogil:
    cdef Py_ssize_t i, k
    cdef double denom = lam, acc, g, tr, inv_lam = 1.0 / lam, scale
    for i in range(f):
        acc = 0.0
        for k in range(f):
            acc = acc + P[i, k] * phi[k]
        Px[i] = acc
        denom = denom + phi[i] * acc
    if not (denom > 0.0 and isfinite(denom)):
        return False
    # W += (Px / denom) err^T, err = target - phi W (each column read first)
    for k in range(o):
        acc = target[k]
        for i in range(f):
            acc = acc - phi[i] * W[i, k]
        for i in range(f):
            W[i, k] = W[i, k] + Px[i] / denom * acc
    # P stays exactly symmetric: each pair (i, k), (k, i) gets one value.  (An
    # asymmetric rounding would not be undone by the downdate, and 1 / lam
    # would grow it at every step until it swamped P.)
    tr = 0.0
    for i in range(f):
        for k in range(i, f):
            g = (P[i, k] - Px[i] * Px[k] / denom) * inv_lam
            P[i, k] = g
            P[k, i] = g
        tr = tr + P[i, i]
    if tr > bound:
        scale = bound / tr
        for i in range(f):
            for k in range(f):
                P[i, k] = P[i, k] * scale
    elif not isfinite(tr):               # cannot happen with the bound; never poison
        for i in range(f):
            for k in range(f):
                P[i, k] = bound / f if i == k else 0.0
    return True
