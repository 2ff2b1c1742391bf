/* Checks the SIMD kernels of rtrl_edge/_tile.h against plain double loops,
 * for every instruction set this build and CPU offer.  Built and run by
 * tests/test_tile_c.py, natively and, where a cross compiler and qemu are
 * installed, for aarch64 (the Raspberry Pi's NEON path).
 * Exit status 0 when every check passes; prints what failed otherwise. */
#include "_tile.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned long long rng_state = 88172645463325252ULL;
static float uniform(void)   /* xorshift64, in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static int failures = 0;

static void check_product(const rtrl_kernels *k, int n_rows, int n_inner, int width)
{
    const int ldw = n_inner + 3, ldb = width + 16, ldo = width + 16;
    float *w = malloc(sizeof(float) * n_rows * ldw);
    float *b = malloc(sizeof(float) * n_inner * ldb);
    float *out = malloc(sizeof(float) * n_rows * ldo);
    for (int i = 0; i < n_rows * ldw; ++i) w[i] = uniform();
    for (int i = 0; i < n_inner * ldb; ++i) b[i] = uniform();
    for (int i = 0; i < n_rows * ldo; ++i) out[i] = 12345.0f;   /* poison */
    k->product(w, ldw, b, ldb, n_rows, n_inner, width, out, ldo);
    double worst = 0.0;
    for (int r = 0; r < n_rows; ++r) {
        for (int c = 0; c < width; ++c) {
            double ref = 0.0, mag = 0.0;
            for (int l = 0; l < n_inner; ++l) {
                ref += (double)w[r * ldw + l] * b[l * ldb + c];
                mag += fabs((double)w[r * ldw + l] * b[l * ldb + c]);
            }
            double err = fabs(out[r * ldo + c] - ref) / (mag + 1e-30);
            if (err > worst) worst = err;
        }
        for (int c = width; c < ldo; ++c)   /* nothing written past width */
            if (out[r * ldo + c] != 12345.0f) {
                printf("FAIL %s product wrote past width at row %d col %d\n", k->name, r, c);
                ++failures;
                break;
            }
    }
    /* float32 accumulation of n_inner terms: error <= n_inner * eps of |terms| */
    if (worst > (n_inner + 1) * FLT_EPSILON) {
        printf("FAIL %s product %dx%d @ %dx%d: relative error %.3g\n",
               k->name, n_rows, n_inner, n_inner, width, worst);
        ++failures;
    }
    free(w); free(b); free(out);
}

static void check_epilogue(const rtrl_kernels *k, int n_rows, int width, int contract)
{
    const int ldp = width + 5, ldt = width + 7;
    float *p = malloc(sizeof(float) * n_rows * ldp);
    float *t = malloc(sizeof(float) * n_rows * ldt);
    float *g = malloc(sizeof(float) * width);
    double *gref = malloc(sizeof(double) * width);
    float *dphi = malloc(sizeof(float) * n_rows), *c = malloc(sizeof(float) * n_rows);
    for (int i = 0; i < n_rows * ldt; ++i) t[i] = uniform();
    for (int i = 0; i < n_rows * ldp; ++i) p[i] = 777.0f;
    for (int j = 0; j < width; ++j) gref[j] = g[j] = uniform();
    for (int r = 0; r < n_rows; ++r) { dphi[r] = uniform(); c[r] = uniform(); }
    k->epilogue(p, ldp, t, ldt, n_rows, width, dphi, c, g, contract);
    for (int r = 0; r < n_rows; ++r) {
        for (int j = 0; j < width; ++j) {
            double v = (double)dphi[r] * t[r * ldt + j];
            if (fabs(p[r * ldp + j] - v) > 1e-6 * (fabs(v) + 1e-6)) {
                printf("FAIL %s epilogue p[%d,%d] = %g, want %g\n", k->name, r, j,
                       p[r * ldp + j], v);
                ++failures;
                goto done;
            }
            if (contract) gref[j] += (double)c[r] * v;
        }
        for (int j = width; j < ldp; ++j)
            if (p[r * ldp + j] != 777.0f) {
                printf("FAIL %s epilogue wrote past width\n", k->name);
                ++failures;
                goto done;
            }
    }
    for (int j = 0; j < width; ++j)
        if (fabs(g[j] - gref[j]) > 1e-5 * (n_rows + 1)) {
            printf("FAIL %s epilogue g[%d] = %g, want %g (contract=%d)\n", k->name, j,
                   g[j], gref[j], contract);
            ++failures;
            break;
        }
done:
    free(p); free(t); free(g); free(gref); free(dphi); free(c);
}

static void fill(float *x, int n) { for (int i = 0; i < n; ++i) x[i] = uniform(); }

static void expect(const rtrl_kernels *k, const char *what, double got, double want,
                   double tol)
{
    if (fabs(got - want) > tol * (fabs(want) + 1.0)) {
        printf("FAIL %s %s: %.9g, want %.9g\n", k->name, what, got, want);
        ++failures;
    }
}

/* The whole sensitivity update of a column range (the product and the fused
 * pass, through the packed slice): p[:, j] <- dphi * (w @ p_old[:, j]) and
 * g[j] += c^T p_new[:, j] for j < wreal; nothing written at or past wreal. */
static void check_sens(const rtrl_kernels *k, int n, int width, int wreal, int contract)
{
    const int ldw = n + 9;
    const ptrdiff_t ldp = width + 48;
    float *w = malloc(sizeof(float) * n * ldw);
    float *p = malloc(sizeof(float) * n * ldp), *p0 = malloc(sizeof(float) * n * ldp);
    float *g = malloc(sizeof(float) * (width + 16));
    double *gref = malloc(sizeof(double) * (width + 16));
    float *t = calloc((size_t)((n + 3) / 4 * 4) * RTRL_MAX_TILE, sizeof(float));
    float *dphi = calloc((size_t)n, sizeof(float)), *c = calloc((size_t)n, sizeof(float));
    fill(w, n * ldw);
    for (int i = 0; i < n * ldp; ++i) p[i] = p0[i] = uniform();
    for (int j = 0; j < width + 16; ++j) gref[j] = g[j] = uniform();
    for (int r = 0; r < n; ++r) { dphi[r] = uniform(); c[r] = uniform(); }
    k->sens(w, ldw, p, ldp, n, width, wreal, dphi, c, g, contract, t);
    double worst_p = 0.0, worst_g = 0.0;
    for (int j = 0; j < width + 16; ++j) {
        double gj = gref[j], gmag = fabs(gref[j]);
        for (int r = 0; r < n; ++r) {
            double ref = 0.0, mag = 0.0;
            for (int l = 0; l < n; ++l) {
                ref += (double)w[r * ldw + l] * p0[l * ldp + j];
                mag += fabs((double)w[r * ldw + l] * p0[l * ldp + j]);
            }
            ref *= dphi[r];
            mag *= fabs(dphi[r]);
            float got = p[r * ldp + j];
            if (j >= wreal) {
                if (j < ldp && got != p0[r * ldp + j]) {
                    printf("FAIL %s sens wrote p[%d,%d] past wreal %d\n", k->name, r, j,
                           wreal);
                    ++failures;
                    goto done;
                }
                continue;
            }
            double err = fabs(got - ref) / (mag + 1e-30);
            if (err > worst_p) worst_p = err;
            if (contract) {
                gj += (double)c[r] * got;
                gmag += fabs((double)c[r] * got);
            }
        }
        if (j >= wreal || !contract) {
            if (g[j] != (float)gref[j]) {
                printf("FAIL %s sens changed g[%d] (wreal %d, contract %d)\n", k->name, j,
                       wreal, contract);
                ++failures;
                goto done;
            }
        } else {
            double err = fabs(g[j] - gj) / (gmag + 1e-30);
            if (err > worst_g) worst_g = err;
        }
    }
    if (worst_p > (n + 1) * FLT_EPSILON || worst_g > 2 * (n + 1) * FLT_EPSILON) {
        printf("FAIL %s sens n=%d width=%d wreal=%d: relative error p %.3g, g %.3g\n",
               k->name, n, width, wreal, worst_p, worst_g);
        ++failures;
    }
done:
    free(w); free(p); free(p0); free(g); free(gref); free(t); free(dphi); free(c);
}

static void check_primitives(const rtrl_kernels *k, int n)
{
    const int ld = n + 3;
    float *w = malloc(sizeof(float) * 5 * ld), *x = malloc(sizeof(float) * n);
    float *y = malloc(sizeof(float) * n), *y0 = malloc(sizeof(float) * n);
    float *out = malloc(sizeof(float) * 5);
    float *th = malloc(sizeof(float) * n), *m1 = malloc(sizeof(float) * n);
    float *m2 = malloc(sizeof(float) * n);
    fill(w, 5 * ld); fill(x, n); fill(y0, n);
    k->matvec(w, ld, x, 5, n, out);
    for (int i = 0; i < 5; ++i) {
        double ref = 0.0;
        for (int j = 0; j < n; ++j) ref += (double)w[i * ld + j] * x[j];
        expect(k, "matvec", out[i], ref, (n + 1) * FLT_EPSILON);
    }
    for (int j = 0; j < n; ++j) y[j] = y0[j];
    k->scale_add(y, 0.5f, x, -2.0f, n);
    for (int j = 0; j < n; ++j) expect(k, "scale_add", y[j], 0.5 * y0[j] - 2.0 * x[j], 1e-6);
    k->scaled(y, 3.0f, x, n);
    for (int j = 0; j < n; ++j) expect(k, "scaled", y[j], 3.0 * x[j], 1e-6);
    int finite = 0;
    double ss = k->sumsq(x, n, &finite), ref = 0.0;
    for (int j = 0; j < n; ++j) ref += (double)x[j] * x[j];
    expect(k, "sumsq", ss, ref, (n + 1) * FLT_EPSILON);
    expect(k, "sumsq finite", finite, 1, 0);
    if (n > 0) {
        float keep = x[n - 1];
        x[n - 1] = INFINITY;
        k->sumsq(x, n, &finite);
        expect(k, "sumsq sees inf", finite, 0, 0);
        x[n - 1] = NAN;
        k->sumsq(x, n, &finite);
        expect(k, "sumsq sees nan", finite, 0, 0);
        x[n - 1] = keep;
    }
    /* the fused passes against the separate ones, in double */
    float *g = malloc(sizeof(float) * (n + 1));
    for (int j = 0; j < n; ++j) y[j] = y0[j];
    double gs = k->trace_grad(y, 0.5f, x, -2.0f, 3.0f, g, n, &finite), gref = 0.0;
    for (int j = 0; j < n; ++j) {
        double pj = 0.5 * y0[j] - 2.0 * x[j];
        expect(k, "trace_grad p", y[j], pj, 1e-6);
        expect(k, "trace_grad g", g[j], 3.0 * pj, 1e-5);
        gref += 9.0 * pj * pj;
    }
    expect(k, "trace_grad sum", gs, gref, (n + 1) * 1e-5);
    expect(k, "trace_grad finite", finite, 1, 0);
    for (int j = 0; j < n; ++j) y[j] = y0[j];
    double ys = k->step_sumsq(y, -0.25f, x, n, &finite), yref = 0.0;
    for (int j = 0; j < n; ++j) {
        double v = y0[j] - 0.25 * x[j];
        expect(k, "step_sumsq y", y[j], v, 1e-6);
        yref += v * v;
    }
    expect(k, "step_sumsq sum", ys, yref, (n + 1) * 1e-5);
    expect(k, "step_sumsq finite", finite, 1, 0);
    if (n > 0) {
        float keep = x[n - 1];
        x[n - 1] = NAN;
        k->step_sumsq(y, 1.0f, x, n, &finite);
        expect(k, "step_sumsq sees nan", finite, 0, 0);
        k->trace_grad(y, 1.0f, x, 1.0f, 1.0f, g, n, &finite);
        expect(k, "trace_grad sees nan", finite, 0, 0);
        x[n - 1] = keep;
    }
    free(g);
    for (int j = 0; j < n; ++j) { th[j] = y0[j]; m1[j] = 0.1f * x[j]; m2[j] = 0.2f; }
    double adam_sq = k->adam(th, m1, m2, x, n, 0.5f, 0.9f, 0.99f, 0.01f, 1e-8f, &finite);
    double want_sq = 0.0;
    for (int j = 0; j < n; ++j) {
        double g = 0.5 * x[j];
        double a = 0.9 * 0.1 * x[j] + 0.1 * g, b = 0.99 * 0.2 + 0.01 * g * g;
        expect(k, "adam m1", m1[j], a, 1e-6);
        expect(k, "adam m2", m2[j], b, 1e-6);
        expect(k, "adam theta", th[j], y0[j] - 0.01 * a / (sqrt(b) + 1e-8), 1e-6);
        want_sq += (double)th[j] * th[j];
    }
    expect(k, "adam sum of squares", adam_sq, want_sq, (n + 1) * FLT_EPSILON);
    expect(k, "adam finite", finite, 1, 0);
    if (n > 0) {
        float keep = x[0];
        x[0] = INFINITY;
        k->adam(th, m1, m2, x, n, 0.5f, 0.9f, 0.99f, 0.01f, 1e-8f, &finite);
        expect(k, "adam sees a non-finite result", finite, 0, 0);
        x[0] = keep;
    }
    free(w); free(x); free(y); free(y0); free(out); free(th); free(m1); free(m2);
}

/* Out of line, so that the compiler cannot move the multiply across the
 * mode switches around its call. */
__attribute__((noinline)) static float halve(volatile float *x)
{
    return *x * 0.5f;
}

static void check_flush(void)
{
    volatile float tiny = FLT_MIN;
    unsigned int old = rtrl_fpu_enter();
    volatile float inside = halve(&tiny);      /* subnormal unless flushed */
    rtrl_fpu_leave(old);
    volatile float after = halve(&tiny);
#if defined(__SSE__) || defined(__x86_64__) || defined(__aarch64__)
    if (inside != 0.0f) {
        printf("FAIL subnormal not flushed inside rtrl_fpu_enter/leave\n");
        ++failures;
    }
#endif
    if (after == 0.0f) {
        printf("FAIL floating-point mode not restored by rtrl_fpu_leave\n");
        ++failures;
    }
}

int main(void)
{
    static const char *names[] = {"base", "avx2", "avx512"};
    static const int shapes[][3] = {   /* rows, inner, width (a multiple of 16) */
        {1, 1, 16}, {3, 5, 16}, {4, 4, 64}, {5, 7, 80}, {8, 8, 144}, {17, 17, 432},
        {33, 33, 1376}, {64, 64, 256},
    };
    static const int widths[] = {1, 3, 15, 16, 17, 100};
    int tested = 0;
    for (int i = 0; i < 3; ++i) {
        const rtrl_kernels *k = rtrl_kernels_named(names[i]);
        if (!k) {
            printf("skip %s (not available here)\n", names[i]);
            continue;
        }
        ++tested;
        for (unsigned s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
            check_product(k, shapes[s][0], shapes[s][1], shapes[s][2]);
        for (unsigned s = 0; s < sizeof widths / sizeof widths[0]; ++s) {
            check_epilogue(k, 5, widths[s], 0);
            check_epilogue(k, 5, widths[s], 1);
            check_primitives(k, widths[s]);
        }
        check_primitives(k, 265);
        static const int sens_shapes[][3] = {   /* n, width, wreal */
            {1, 16, 1}, {3, 16, 16}, {5, 80, 77}, {6, 96, 96}, {7, 112, 100},
            {13, 208, 201}, {32, 1312, 1312}, {33, 1376, 1370}, {64, 4672, 4672},
        };
        for (unsigned s = 0; s < sizeof sens_shapes / sizeof sens_shapes[0]; ++s) {
            check_sens(k, sens_shapes[s][0], sens_shapes[s][1], sens_shapes[s][2], 0);
            check_sens(k, sens_shapes[s][0], sens_shapes[s][1], sens_shapes[s][2], 1);
        }
        printf("checked %s\n", k->name);
    }
    check_flush();
    printf("best: %s\n", rtrl_kernels_best()->name);
    if (!tested) {
        printf("FAIL no kernels available\n");
        return 1;
    }
    printf("%s\n", failures ? "FAILED" : "OK");
    return failures ? 1 : 0;
}
