/* Register-blocked float32 product for the n^4 term of exact RTRL.
 *
 * Cython cannot name SIMD vector types, so this one piece is C: a small
 * matrix-times-panel product written with GCC/Clang vector extensions, which
 * lower to SSE/AVX/AVX-512 on x86 and to NEON on ARM.  Everything around it
 * (the fused scaling, the delta term, the gradient contraction) is in
 * _kernels.pyx.
 *
 * Portable builds compile a baseline version (4-wide vectors: SSE2 / NEON).
 * On x86-64 with GCC or Clang, AVX2+FMA and AVX-512 versions are compiled too
 * and chosen at run time from what the CPU reports, so a wheel built for
 * generic x86-64 still uses the wide units of the machine it runs on.
 */
#ifndef RTRL_EDGE_TILE_H
#define RTRL_EDGE_TILE_H

#include <stddef.h>
#include <string.h>

/* Width of the widest vector any instantiation uses, in floats: callers pad
 * row strides and block widths to a multiple of it. */
#define RTRL_MAX_VL 16
/* Widest column tile (RTRL_NV * RTRL_VL) of any instantiation: the sensitivity
 * update's scratch is n_rows x RTRL_MAX_TILE floats per thread. */
#define RTRL_MAX_TILE 64
/* Slices of P the sensitivity update asks for ahead of the one it packs
 * (4: about 7 % off the median step at n = 64 on a 2-core EPYC, where P is
 * twice the L2; 1 and 8 were slower). */
#define RTRL_PREFETCH 4

typedef void (*rtrl_product_fn)(const float *w, int ldw, const float *b,
                                ptrdiff_t ldb, int n_rows, int n_inner,
                                int width, float *out, int ldo);
typedef void (*rtrl_epilogue_fn)(float *p, ptrdiff_t ldp, const float *t, int ldt,
                                 int n_rows, int width, const float *dphi,
                                 const float *c, float *g, int contract);

typedef void (*rtrl_sens_fn)(const float *w, int ldw, float *p, ptrdiff_t ldp, int n_rows,
                             int width, int wreal, const float *dphi, const float *c,
                             float *g, int contract, float *t);

typedef void (*rtrl_matvec_fn)(const float *w, ptrdiff_t ldw, const float *x,
                               int rows, int cols, float *out);
typedef void (*rtrl_scale_add_fn)(float *y, float a, const float *x, float b, ptrdiff_t n);
typedef void (*rtrl_scaled_fn)(float *y, float a, const float *x, ptrdiff_t n);
typedef double (*rtrl_sumsq_fn)(const float *x, ptrdiff_t n, int *finite);
typedef double (*rtrl_adam_fn)(float *theta, float *m1, float *m2, const float *g,
                               ptrdiff_t n, float scale, float b1, float b2, float lr,
                               float eps, int *finite);
typedef float (*rtrl_peak_fn)(long iters, float a, float b);
typedef double (*rtrl_trace_grad_fn)(float *p, float a, const float *z, float b, float c,
                                     float *g, ptrdiff_t n, int *finite);
typedef double (*rtrl_step_sumsq_fn)(float *y, float a, const float *x, ptrdiff_t n,
                                     int *finite);

/* The kernels of one instruction set. */
typedef struct {
    rtrl_product_fn product;
    rtrl_epilogue_fn epilogue;
    rtrl_sens_fn sens;      /* product and fused pass, one column slice at a time */
    rtrl_matvec_fn matvec;
    rtrl_scale_add_fn scale_add;
    rtrl_scaled_fn scaled;
    rtrl_sumsq_fn sumsq;
    rtrl_adam_fn adam;      /* Adam's step and the check of its result, one pass */
    rtrl_trace_grad_fn trace_grad;    /* a SnAp-1 row and its gradient, one pass */
    rtrl_step_sumsq_fn step_sumsq;    /* y += a x and the check of y, one pass */
    rtrl_peak_fn peak;      /* the benchmark's register-only multiply-adds */
    int peak_flops;         /* flops of one round of `peak` */
    const char *name;
} rtrl_kernels;

#define RTRL_KERNELS(SUFFIX, NAME, VL, ACC) { \
    rtrl_product_##SUFFIX, rtrl_epilogue_##SUFFIX, rtrl_sens_##SUFFIX, \
    rtrl_matvec_##SUFFIX, \
    rtrl_scale_add_##SUFFIX, rtrl_scaled_##SUFFIX, rtrl_sumsq_##SUFFIX, \
    rtrl_adam_##SUFFIX, rtrl_trace_grad_##SUFFIX, rtrl_step_sumsq_##SUFFIX, \
    rtrl_peak_##SUFFIX, 2 * (VL) * (ACC), NAME }

/* Chains of the peak benchmark: about three quarters of the vector registers
 * (16 on x86 before AVX-512, 32 on aarch64 and with AVX-512), which covers
 * two multiply-add units of latency 4 to 5 with room to spare. */
#if defined(__aarch64__)
#define RTRL_BASE_PEAK_ACC 24
#else
#define RTRL_BASE_PEAK_ACC 12
#endif

#define RTRL_VL 4
#if defined(__aarch64__)
#define RTRL_NV 4            /* 32 NEON registers: a 4 x 16 tile of accumulators */
#else
#define RTRL_NV 2            /* 16 SSE registers */
#endif
#define RTRL_MR 6            /* 6 x NV accumulators: 12 of 16, 24 of 32 registers */
#define RTRL_PEAK_ACC RTRL_BASE_PEAK_ACC
#define RTRL_SUFFIX base
#define RTRL_TARGET
#include "_tile_impl.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define RTRL_HAVE_X86_DISPATCH 1

#define RTRL_VL 8
#define RTRL_NV 2
#define RTRL_MR 6            /* 12 accumulators, 2 loads, 1 broadcast: 15 of 16 */
#define RTRL_PEAK_ACC 12
#define RTRL_SUFFIX avx2
#define RTRL_TARGET __attribute__((target("avx2,fma")))
#include "_tile_impl.h"

#define RTRL_VL 16
#define RTRL_NV 4
#define RTRL_MR 6            /* 24 accumulators, 4 loads, 1 broadcast: 29 of 32 */
#define RTRL_PEAK_ACC 24
#define RTRL_SUFFIX avx512
#define RTRL_TARGET __attribute__((target("avx512f")))
#include "_tile_impl.h"
#endif

static const rtrl_kernels rtrl_kernels_base = RTRL_KERNELS(base, "base", 4,
                                                           RTRL_BASE_PEAK_ACC);
#ifdef RTRL_HAVE_X86_DISPATCH
static const rtrl_kernels rtrl_kernels_avx2 = RTRL_KERNELS(avx2, "avx2", 8, 12);
static const rtrl_kernels rtrl_kernels_avx512 = RTRL_KERNELS(avx512, "avx512", 16, 24);
#endif

/* The kernels for an instruction set named "base", "avx2" or "avx512", or
 * NULL if this build or this CPU does not have it. */
static const rtrl_kernels *rtrl_kernels_named(const char *name)
{
    if (strcmp(name, "base") == 0)
        return &rtrl_kernels_base;
#ifdef RTRL_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")
            && __builtin_cpu_supports("fma"))
        return &rtrl_kernels_avx2;
    if (strcmp(name, "avx512") == 0 && __builtin_cpu_supports("avx512f"))
        return &rtrl_kernels_avx512;
#endif
    return NULL;
}

/* The widest kernels this CPU runs. */
static const rtrl_kernels *rtrl_kernels_best(void)
{
#ifdef RTRL_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return &rtrl_kernels_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &rtrl_kernels_avx2;
#endif
    return &rtrl_kernels_base;
}

/* Flush subnormal floats to zero while a kernel runs.  Sensitivities of old
 * inputs decay geometrically and would otherwise reach the subnormal range,
 * where x86 cores take a microcode assist per operation; over a long stream
 * that slows a step by orders of magnitude.  Values below 1.2e-38 do not
 * matter to a gradient. */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
static inline unsigned int rtrl_fpu_enter(void)
{
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);          /* FTZ | DAZ */
    return old;
}
static inline void rtrl_fpu_leave(unsigned int old) { _mm_setcsr(old); }
#elif defined(__aarch64__)
static inline unsigned int rtrl_fpu_enter(void)
{
    unsigned long old;
    __asm__ volatile("mrs %0, fpcr" : "=r"(old));
    __asm__ volatile("msr fpcr, %0" : : "r"(old | (1ul << 24)));   /* FZ */
    return (unsigned int)old;
}
static inline void rtrl_fpu_leave(unsigned int old)
{
    unsigned long v = old;
    __asm__ volatile("msr fpcr, %0" : : "r"(v));
}
#else
static inline unsigned int rtrl_fpu_enter(void) { return 0; }
static inline void rtrl_fpu_leave(unsigned int old) { (void)old; }
#endif

#endif /* RTRL_EDGE_TILE_H */
