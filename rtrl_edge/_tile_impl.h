/* One instantiation of the register-blocked product used by the RTRL sensitivity
 * update, and of the fused pass that follows it.  Included by _tile.h once per instruction set, with
 *   RTRL_VL      floats per vector,
 *   RTRL_NV      vectors per tile row (tile width = RTRL_NV * RTRL_VL columns),
 *   RTRL_MR      rows per tile (RTRL_MR * RTRL_NV accumulators, plus RTRL_NV
 *                loaded vectors and one broadcast, must fit the registers),
 *   RTRL_SUFFIX  name suffix,
 *   RTRL_TARGET  function attribute selecting the instruction set (may be empty).
 *
 * out[k, c] = sum_l w[k*ldw + l] * b[l*ldb + c]   for 0 <= k < n_rows, 0 <= c < width
 *
 * `width` must be a multiple of RTRL_VL (the caller pads rows of b and out).
 * Each tile keeps RTRL_MR x RTRL_NV vector accumulators in registers and streams
 * one row of b per inner step, so every loaded vector of b feeds RTRL_MR
 * multiply-adds (the register blocking of Goto & van de Geijn, 2008).
 */
#define RTRL_CAT_(a, b) a##_##b
#define RTRL_CAT(a, b) RTRL_CAT_(a, b)
#define RTRL_VEC RTRL_CAT(rtrl_vec, RTRL_SUFFIX)
#define RTRL_LOAD RTRL_CAT(rtrl_load, RTRL_SUFFIX)
#define RTRL_STORE RTRL_CAT(rtrl_store, RTRL_SUFFIX)
#define RTRL_TILE RTRL_CAT(rtrl_tile, RTRL_SUFFIX)
#define RTRL_ACCUMULATE RTRL_CAT(rtrl_accumulate, RTRL_SUFFIX)
#define RTRL_PRODUCT RTRL_CAT(rtrl_product, RTRL_SUFFIX)
#define RTRL_COLUMN RTRL_CAT(rtrl_column, RTRL_SUFFIX)
#define RTRL_SENS RTRL_CAT(rtrl_sens, RTRL_SUFFIX)
#define RTRL_TILE_SENS RTRL_CAT(rtrl_tile_sens, RTRL_SUFFIX)
#define RTRL_COLUMN_SENS RTRL_CAT(rtrl_column_sens, RTRL_SUFFIX)
#define RTRL_EPILOGUE RTRL_CAT(rtrl_epilogue, RTRL_SUFFIX)
#define RTRL_TALLY RTRL_CAT(rtrl_tally, RTRL_SUFFIX)
#define RTRL_TALLY_ADD RTRL_CAT(rtrl_tally_add, RTRL_SUFFIX)
#define RTRL_TALLY_END RTRL_CAT(rtrl_tally_end, RTRL_SUFFIX)

typedef float RTRL_VEC __attribute__((vector_size(4 * RTRL_VL)));

RTRL_TARGET static inline __attribute__((always_inline)) RTRL_VEC
RTRL_LOAD(const float *p)
{
    RTRL_VEC v;
    memcpy(&v, p, sizeof v);   /* an unaligned vector load */
    return v;
}

RTRL_TARGET static inline __attribute__((always_inline)) void
RTRL_STORE(float *p, RTRL_VEC v)
{
    memcpy(p, &v, sizeof v);
}

/* acc[r][v] = sum_l w[r*ldw + l] * b[l*ldb + v*VL ...] for r < MR, v < NV: the
 * register tile's inner loop.  MR and NV are compile-time constants at every
 * call site, so the compiler unrolls both loops and keeps `acc` in registers. */
RTRL_TARGET static inline __attribute__((always_inline)) void
RTRL_ACCUMULATE(const float *w, int ldw, const float *b, ptrdiff_t ldb, int n_inner,
                RTRL_VEC acc[RTRL_MR][RTRL_NV], const int MR, const int NV)
{
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v)
            acc[r][v] = (RTRL_VEC){0};
    for (int l = 0; l < n_inner; ++l) {
        const float *brow = b + (ptrdiff_t)l * ldb;
        RTRL_VEC bv[RTRL_NV];
        for (int v = 0; v < NV; ++v)
            bv[v] = RTRL_LOAD(brow + v * RTRL_VL);
        for (int r = 0; r < MR; ++r) {
            const float wr = w[(ptrdiff_t)r * ldw + l];
            for (int v = 0; v < NV; ++v)
                acc[r][v] += wr * bv[v];
        }
    }
}

/* One MR x (NV * VL) tile of the plain product, stored to out. */
RTRL_TARGET static inline __attribute__((always_inline)) void
RTRL_TILE(const float *w, int ldw, const float *b, ptrdiff_t ldb, int n_inner,
          float *out, int ldo, const int MR, const int NV)
{
    RTRL_VEC acc[RTRL_MR][RTRL_NV];
    RTRL_ACCUMULATE(w, ldw, b, ldb, n_inner, acc, MR, NV);
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v)
            RTRL_STORE(out + (ptrdiff_t)r * ldo + v * RTRL_VL, acc[r][v]);
}

/* Rows 0..n_rows-1 of one column slice (NV vectors wide): full RTRL_MR-row
 * tiles, then the remainder in tiles of 4, 2 and 1 rows, each with its
 * accumulators in registers. */
RTRL_TARGET static inline __attribute__((always_inline)) void
RTRL_COLUMN(const float *w, int ldw, const float *b, ptrdiff_t ldb, int n_rows,
            int n_inner, float *out, int ldo, const int NV)
{
    int k = 0;
    for (; k + RTRL_MR <= n_rows; k += RTRL_MR)
        RTRL_TILE(w + (ptrdiff_t)k * ldw, ldw, b, ldb, n_inner,
                  out + (ptrdiff_t)k * ldo, ldo, RTRL_MR, NV);
#if RTRL_MR > 4
    for (; k + 4 <= n_rows; k += 4)
        RTRL_TILE(w + (ptrdiff_t)k * ldw, ldw, b, ldb, n_inner,
                  out + (ptrdiff_t)k * ldo, ldo, 4, NV);
#endif
    for (; k + 2 <= n_rows; k += 2)
        RTRL_TILE(w + (ptrdiff_t)k * ldw, ldw, b, ldb, n_inner,
                  out + (ptrdiff_t)k * ldo, ldo, 2, NV);
    for (; k < n_rows; ++k)
        RTRL_TILE(w + (ptrdiff_t)k * ldw, ldw, b, ldb, n_inner,
                  out + (ptrdiff_t)k * ldo, ldo, 1, NV);
}

RTRL_TARGET static void
RTRL_PRODUCT(const float *w, int ldw, const float *b, ptrdiff_t ldb,
             int n_rows, int n_inner, int width, float *out, int ldo)
{
    const int tile = RTRL_NV * RTRL_VL;
    int c = 0;
    /* Column tiles outermost: the n_inner x tile slice of b stays in L1 while
     * every row group of w passes over it. */
    for (; c + tile <= width; c += tile)
        RTRL_COLUMN(w, ldw, b + c, ldb, n_rows, n_inner, out + c, ldo, RTRL_NV);
    for (; c < width; c += RTRL_VL)     /* leftover columns, one vector wide */
        RTRL_COLUMN(w, ldw, b + c, ldb, n_rows, n_inner, out + c, ldo, 1);
}

/* The fused pass over one column block after the product (DESIGN §3.2):
 *   p[k, j] = dphi[k] * t[k, j];   g[j] += c[k] * p[k, j]  (if contract)
 * for k < n_rows, j < width; p has row stride ldp, t row stride ldt.  Kept
 * here, beside the product, so that it runs at the same vector width. */
RTRL_TARGET static void
RTRL_EPILOGUE(float *p, ptrdiff_t ldp, const float *t, int ldt, int n_rows,
              int width, const float *dphi, const float *c, float *g, int contract)
{
    for (int k = 0; k < n_rows; ++k) {
        float *row = p + (ptrdiff_t)k * ldp;
        const float *trow = t + (ptrdiff_t)k * ldt;
        const float d = dphi[k];
        int j = 0;
        if (contract) {
            const float ck = c[k];
            for (; j + RTRL_VL <= width; j += RTRL_VL) {
                RTRL_VEC v = d * RTRL_LOAD(trow + j);
                RTRL_STORE(row + j, v);
                RTRL_STORE(g + j, RTRL_LOAD(g + j) + ck * v);
            }
            for (; j < width; ++j) {
                row[j] = d * trow[j];
                g[j] += ck * row[j];
            }
        } else {
            for (; j + RTRL_VL <= width; j += RTRL_VL)
                RTRL_STORE(row + j, d * RTRL_LOAD(trow + j));
            for (; j < width; ++j)
                row[j] = d * trow[j];
        }
    }
}

/* One MR-row tile of the sensitivity update, from a packed column slice b
 * (n_inner x ldb, contiguous) straight into p: p[r, :] = d[r] * (w[r, :] @ b)
 * for r < MR, and gacc += c[r] * p[r, :] (if contract).  Only the first
 * `cols` columns are written (fewer than the tile only at the end of P). */
RTRL_TARGET static inline __attribute__((always_inline)) void
RTRL_TILE_SENS(const float *w, int ldw, const float *b, int ldb, int n_inner, float *p,
               ptrdiff_t ldp, const float *d, const float *c, int contract,
               RTRL_VEC *gacc, int cols, const int MR, const int NV)
{
    RTRL_VEC acc[RTRL_MR][RTRL_NV];
    RTRL_ACCUMULATE(w, ldw, b, ldb, n_inner, acc, MR, NV);
    for (int r = 0; r < MR; ++r) {
        float *row = p + (ptrdiff_t)r * ldp;
        for (int v = 0; v < NV; ++v) {
            RTRL_VEC val = d[r] * acc[r][v];
            if (contract)
                gacc[v] += c[r] * val;
            if (cols >= NV * RTRL_VL)
                RTRL_STORE(row + v * RTRL_VL, val);
            else
                for (int q = 0; q < RTRL_VL; ++q)
                    if (v * RTRL_VL + q < cols)
                        row[v * RTRL_VL + q] = val[q];
        }
    }
}

/* The sensitivity update of one column slice (NV vectors wide) of p, whose
 * old values were packed into b: every row group, then g += c^T p. */
RTRL_TARGET static inline __attribute__((always_inline)) void
RTRL_COLUMN_SENS(const float *w, int ldw, const float *b, int n, float *p, ptrdiff_t ldp,
                 const float *dphi, const float *c, float *g, int contract, int cols,
                 const int NV)
{
    const int ldb = NV * RTRL_VL;
    RTRL_VEC gacc[RTRL_NV];
    for (int v = 0; v < NV; ++v)
        gacc[v] = (RTRL_VEC){0};
    int k = 0;
#define RTRL_ROWS_(MRC) \
    RTRL_TILE_SENS(w + (ptrdiff_t)k * ldw, ldw, b, ldb, n, p + (ptrdiff_t)k * ldp, ldp, \
                   dphi + k, c + k, contract, gacc, cols, MRC, NV)
    for (; k + RTRL_MR <= n; k += RTRL_MR)
        RTRL_ROWS_(RTRL_MR);
#if RTRL_MR > 4
    for (; k + 4 <= n; k += 4)
        RTRL_ROWS_(4);
#endif
    for (; k + 2 <= n; k += 2)
        RTRL_ROWS_(2);
    for (; k < n; ++k)
        RTRL_ROWS_(1);
#undef RTRL_ROWS_
    if (!contract)
        return;
    for (int v = 0; v < NV; ++v) {
        if (cols >= NV * RTRL_VL) {
            RTRL_STORE(g + v * RTRL_VL, RTRL_LOAD(g + v * RTRL_VL) + gacc[v]);
        } else {
            for (int q = 0; q < RTRL_VL; ++q)
                if (v * RTRL_VL + q < cols)
                    g[v * RTRL_VL + q] += gacc[v][q];
        }
    }
}

/* Copy columns [0, width) of n rows of p (row stride ldp) into b (row stride
 * width), and, if `ahead` > 0, ask for the lines of the slice `ahead` floats
 * further on: RTRL_PREFETCH slices ahead, the strided lines of P (each row
 * on its own page) arrive while the products of the slices between run. */
RTRL_TARGET static inline __attribute__((always_inline)) void
RTRL_CAT(rtrl_pack, RTRL_SUFFIX)(const float *p, ptrdiff_t ldp, int n, int width,
                                 int ahead, float *b)
{
    for (int l = 0; l < n; ++l) {
        const float *row = p + (ptrdiff_t)l * ldp;
        for (int j = 0; j < width; j += RTRL_VL)
            RTRL_STORE(b + (ptrdiff_t)l * width + j, RTRL_LOAD(row + j));
        if (ahead > 0)
            for (int j = 0; j < width; j += 16)
                __builtin_prefetch(row + ahead + j, 0, 3);
    }
}

/* The whole sensitivity update of a range of columns, in place (DESIGN §3.2):
 *   p[:, j] <- dphi * (w @ p[:, j]);  g[j] += c^T p[:, j]  (if contract)
 * for j < width (a multiple of RTRL_VL; only j < wreal is written: the rest
 * is the row stride's zero padding, and g past it is not this update's).
 * One column slice of the tile's width at a time: its old values are packed
 * into t (n_rows x tile floats, contiguous, where a strided slice of P would
 * fall into a few cache sets), then every row group's product is scaled,
 * stored and contracted straight from the registers (the packing of
 * Goto & van de Geijn, 2008).  Scratch t: n_rows * RTRL_NV * RTRL_VL floats. */
RTRL_TARGET static void
RTRL_SENS(const float *w, int ldw, float *p, ptrdiff_t ldp, int n_rows, int width,
          int wreal, const float *dphi, const float *c, float *g, int contract, float *t)
{
    const int tile = RTRL_NV * RTRL_VL;
    int j = 0;
    for (; j + tile <= width; j += tile) {
        const int ahead = j + (RTRL_PREFETCH + 1) * tile <= width ? RTRL_PREFETCH * tile : 0;
        RTRL_CAT(rtrl_pack, RTRL_SUFFIX)(p + j, ldp, n_rows, tile, ahead, t);
        if (j < wreal)
            RTRL_COLUMN_SENS(w, ldw, t, n_rows, p + j, ldp, dphi, c, g + j, contract,
                             wreal - j, RTRL_NV);
    }
    for (; j < width; j += RTRL_VL) {
        RTRL_CAT(rtrl_pack, RTRL_SUFFIX)(p + j, ldp, n_rows, RTRL_VL, 0, t);
        if (j < wreal)
            RTRL_COLUMN_SENS(w, ldw, t, n_rows, p + j, ldp, dphi, c, g + j, contract,
                             wreal - j, 1);
    }
}

/* Level-1/2 primitives at the same vector width, for the O(n^2) parts of a
 * step (forward pass, cheap learners, optimiser).  Sums run over RTRL_VL
 * lanes: a fixed order for a given instruction set. */

RTRL_TARGET static inline __attribute__((always_inline)) float
RTRL_CAT(rtrl_hsum, RTRL_SUFFIX)(RTRL_VEC v)
{
    float s = 0.0f;
    for (int k = 0; k < RTRL_VL; ++k)
        s += v[k];
    return s;
}

/* out[i] = sum_j w[i*ldw + j] x[j], i < rows, j < cols */
RTRL_TARGET static void
RTRL_CAT(rtrl_matvec, RTRL_SUFFIX)(const float *w, ptrdiff_t ldw, const float *x,
                                   int rows, int cols, float *out)
{
    for (int i = 0; i < rows; ++i) {
        const float *row = w + (ptrdiff_t)i * ldw;
        RTRL_VEC a0 = {0}, a1 = {0};
        int j = 0;
        for (; j + 2 * RTRL_VL <= cols; j += 2 * RTRL_VL) {
            a0 += RTRL_LOAD(row + j) * RTRL_LOAD(x + j);
            a1 += RTRL_LOAD(row + j + RTRL_VL) * RTRL_LOAD(x + j + RTRL_VL);
        }
        for (; j + RTRL_VL <= cols; j += RTRL_VL)
            a0 += RTRL_LOAD(row + j) * RTRL_LOAD(x + j);
        float acc = RTRL_CAT(rtrl_hsum, RTRL_SUFFIX)(a0 + a1);
        for (; j < cols; ++j)
            acc += row[j] * x[j];
        out[i] = acc;
    }
}

/* y = a*y + b*x */
RTRL_TARGET static void
RTRL_CAT(rtrl_scale_add, RTRL_SUFFIX)(float *y, float a, const float *x, float b, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + RTRL_VL <= n; j += RTRL_VL)
        RTRL_STORE(y + j, a * RTRL_LOAD(y + j) + b * RTRL_LOAD(x + j));
    for (; j < n; ++j)
        y[j] = a * y[j] + b * x[j];
}

/* y = a*x */
RTRL_TARGET static void
RTRL_CAT(rtrl_scaled, RTRL_SUFFIX)(float *y, float a, const float *x, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + RTRL_VL <= n; j += RTRL_VL)
        RTRL_STORE(y + j, a * RTRL_LOAD(x + j));
    for (; j < n; ++j)
        y[j] = a * x[j];
}

/* sum x^2, and whether every x is finite (inf * 0 and NaN * 0 are NaN) */
RTRL_TARGET static double
RTRL_CAT(rtrl_sumsq, RTRL_SUFFIX)(const float *x, ptrdiff_t n, int *finite)
{
    RTRL_VEC a0 = {0}, a1 = {0}, z = {0};
    ptrdiff_t j = 0;
    for (; j + 2 * RTRL_VL <= n; j += 2 * RTRL_VL) {
        RTRL_VEC v0 = RTRL_LOAD(x + j), v1 = RTRL_LOAD(x + j + RTRL_VL);
        a0 += v0 * v0;
        a1 += v1 * v1;
        z += (v0 + v1) * 0.0f;
    }
    double acc = (double)RTRL_CAT(rtrl_hsum, RTRL_SUFFIX)(a0 + a1);
    float zs = RTRL_CAT(rtrl_hsum, RTRL_SUFFIX)(z);
    for (; j < n; ++j) {
        acc += (double)x[j] * x[j];
        zs += x[j] * 0.0f;
    }
    *finite = zs == 0.0f;
    return acc;
}

/* What a pass learns about the values it writes, on the way: their sum of
 * squares and whether every one is finite (v * 0 is 0 for a finite v and NaN
 * otherwise), in RTRL_VL lanes; the scalar tail is added after, from memory,
 * in order.  Shared by the kernels that write a result and check it at once. */
typedef struct { RTRL_VEC sq, nan; } RTRL_TALLY;

RTRL_TARGET static inline __attribute__((always_inline)) void
RTRL_TALLY_ADD(RTRL_TALLY *t, RTRL_VEC v)
{
    t->sq += v * v;
    t->nan += v * 0.0f;
}

/* The sum of squares of the lanes and of tail[0:n_tail]; *finite as rtrl_sumsq's. */
RTRL_TARGET static inline __attribute__((always_inline)) double
RTRL_TALLY_END(RTRL_TALLY t, const float *tail, ptrdiff_t n_tail, int *finite)
{
    double sum = (double)RTRL_CAT(rtrl_hsum, RTRL_SUFFIX)(t.sq);
    float zs = RTRL_CAT(rtrl_hsum, RTRL_SUFFIX)(t.nan);
    for (ptrdiff_t j = 0; j < n_tail; ++j) {
        sum += (double)tail[j] * tail[j];
        zs += tail[j] * 0.0f;
    }
    *finite = zs == 0.0f;
    return sum;
}

/* One pass of a row trace and its gradient: p = a*p + b*z, then g = c*p;
 * returns sum g^2 with *finite as rtrl_sumsq's (every g finite), so that the
 * update needs no pass of its own over the gradient for the clip norm. */
RTRL_TARGET static double
RTRL_CAT(rtrl_trace_grad, RTRL_SUFFIX)(float *p, float a, const float *z, float b, float c,
                                       float *g, ptrdiff_t n, int *finite)
{
    RTRL_TALLY t = {{0}, {0}};
    ptrdiff_t j = 0;
    for (; j + RTRL_VL <= n; j += RTRL_VL) {
        RTRL_VEC pv = a * RTRL_LOAD(p + j) + b * RTRL_LOAD(z + j);
        RTRL_VEC gv = c * pv;
        RTRL_STORE(p + j, pv);
        RTRL_STORE(g + j, gv);
        RTRL_TALLY_ADD(&t, gv);
    }
    const ptrdiff_t tail = j;
    for (; j < n; ++j) {
        p[j] = a * p[j] + b * z[j];
        g[j] = c * p[j];
    }
    return RTRL_TALLY_END(t, g + tail, n - tail, finite);
}

/* y += a*x, and the new y's sum of squares with *finite as rtrl_sumsq's: a
 * plain gradient step and the check of its result in one pass. */
RTRL_TARGET static double
RTRL_CAT(rtrl_step_sumsq, RTRL_SUFFIX)(float *y, float a, const float *x, ptrdiff_t n,
                                       int *finite)
{
    RTRL_TALLY t = {{0}, {0}};
    ptrdiff_t j = 0;
    for (; j + RTRL_VL <= n; j += RTRL_VL) {
        RTRL_VEC v = RTRL_LOAD(y + j) + a * RTRL_LOAD(x + j);
        RTRL_STORE(y + j, v);
        RTRL_TALLY_ADD(&t, v);
    }
    const ptrdiff_t tail = j;
    for (; j < n; ++j)
        y[j] += a * x[j];
    return RTRL_TALLY_END(t, y + tail, n - tail, finite);
}

/* Adam's element update (Kingma & Ba 2015), g scaled by `scale`:
 * m1 = b1 m1 + (1-b1) g;  m2 = b2 m2 + (1-b2) g^2;  theta -= lr m1 / (sqrt(m2) + eps)
 * and the new theta's sum of squares with *finite as rtrl_sumsq's: the step
 * and the check of its result in one pass. */
RTRL_TARGET static double
RTRL_CAT(rtrl_adam, RTRL_SUFFIX)(float *theta, float *m1, float *m2, const float *g,
                                 ptrdiff_t n, float scale, float b1, float b2,
                                 float lr, float eps, int *finite)
{
    RTRL_TALLY t = {{0}, {0}};
    ptrdiff_t j = 0;
    for (; j + RTRL_VL <= n; j += RTRL_VL) {
        RTRL_VEC gv = scale * RTRL_LOAD(g + j);
        RTRL_VEC a = b1 * RTRL_LOAD(m1 + j) + (1.0f - b1) * gv;
        RTRL_VEC b = b2 * RTRL_LOAD(m2 + j) + (1.0f - b2) * gv * gv;
        RTRL_VEC root;
        for (int k = 0; k < RTRL_VL; ++k)
            root[k] = __builtin_sqrtf(b[k]);
        RTRL_STORE(m1 + j, a);
        RTRL_STORE(m2 + j, b);
        RTRL_VEC th = RTRL_LOAD(theta + j) - lr * a / (root + eps);
        RTRL_STORE(theta + j, th);
        RTRL_TALLY_ADD(&t, th);
    }
    const ptrdiff_t tail = j;
    for (; j < n; ++j) {
        float gi = scale * g[j];
        m1[j] = b1 * m1[j] + (1.0f - b1) * gi;
        m2[j] = b2 * m2[j] + (1.0f - b2) * gi * gi;
        theta[j] -= lr * m1[j] / (__builtin_sqrtf(m2[j]) + eps);
    }
    return RTRL_TALLY_END(t, theta + tail, n - tail, finite);
}

/* The core's peak multiply-add rate at this vector width, for the benchmark
 * that reports how close the n^4 term comes to it: RTRL_PEAK_ACC independent
 * chains acc = acc * a + b on registers alone (enough chains to cover the
 * multiply-add latency on every unit), `iters` rounds, no memory traffic.
 * Flops: 2 * RTRL_VL * RTRL_PEAK_ACC * iters.  Returns the sum of the chains
 * so that none is optimised away (each converges to b / (1 - a)). */
RTRL_TARGET static float
RTRL_CAT(rtrl_peak, RTRL_SUFFIX)(long iters, float a_, float b_)
{
    RTRL_VEC acc[RTRL_PEAK_ACC];
    const RTRL_VEC a = (RTRL_VEC){0} + a_, b = (RTRL_VEC){0} + b_;
    for (int i = 0; i < RTRL_PEAK_ACC; ++i)
        acc[i] = (RTRL_VEC){0} + (float)i;
    for (long t = 0; t < iters; ++t)
        for (int i = 0; i < RTRL_PEAK_ACC; ++i)
            acc[i] = acc[i] * a + b;
    float sum = 0.0f;
    for (int i = 0; i < RTRL_PEAK_ACC; ++i)
        for (int k = 0; k < RTRL_VL; ++k)
            sum += acc[i][k];
    return sum;
}

#undef RTRL_PEAK_ACC
#undef RTRL_EPILOGUE
#undef RTRL_TALLY
#undef RTRL_TALLY_ADD
#undef RTRL_TALLY_END
#undef RTRL_VEC
#undef RTRL_LOAD
#undef RTRL_STORE
#undef RTRL_TILE
#undef RTRL_ACCUMULATE
#undef RTRL_PRODUCT
#undef RTRL_COLUMN
#undef RTRL_SENS
#undef RTRL_TILE_SENS
#undef RTRL_COLUMN_SENS
#undef RTRL_MR
#undef RTRL_VL
#undef RTRL_NV
#undef RTRL_SUFFIX
#undef RTRL_TARGET
