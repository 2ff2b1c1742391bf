/* A persistent pool of worker threads for one model (`threads=k`).
 *
 * The model's constructor starts k - 1 workers once; every step that splits
 * work hands each of them one part of a task and does part 0 itself, so no
 * thread is created per step.  Workers sleep on a condition variable between
 * tasks.  `rtrl_pool_free` stops and joins them: a model that is deleted
 * leaves no thread behind.
 *
 * Plain POSIX threads, not OpenMP: the pool's size is the model's `threads`,
 * whatever OMP_NUM_THREADS says, and it shares no runtime with the BLAS or
 * OpenMP of the program around it.
 *
 * A task must give the same result however its parts are spread, and its
 * parts must not write the same memory.  After fork() the child has no
 * workers: `rtrl_pool_run` then does every part itself, in order.
 */
#ifndef RTRL_EDGE_POOL_H
#define RTRL_EDGE_POOL_H

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "_tile.h"          /* rtrl_fpu_enter */

typedef void (*rtrl_task_fn)(void *arg, int part, int parts);

struct rtrl_pool;

typedef struct {
    struct rtrl_pool *pool;
    int part;
} rtrl_worker;

typedef struct rtrl_pool {
    pthread_mutex_t mu;
    pthread_cond_t wake;        /* a new round, or stop */
    pthread_cond_t done;        /* the last worker of a round finished */
    rtrl_task_fn task;
    void *arg;
    unsigned long round;        /* rounds handed out so far (atomic) */
    int busy;                   /* workers still on the current round (atomic) */
    int stop;                   /* (atomic) */
    int parts;                  /* workers + the calling thread */
    int started;                /* workers actually running */
    pid_t pid;                  /* process that started them */
    pthread_t *threads;
    rtrl_worker *workers;
} rtrl_pool;

/* Worker stacks: the kernels use a few KiB; the default of 8 MiB would only
 * be address space, but a small board's limits are better left untouched. */
#define RTRL_POOL_STACK (256 * 1024)

/* How long a thread that waits (a worker for the next round, the caller for
 * the workers) spins before it sleeps on the condition variable.  Steps that
 * follow each other (a replay, a benchmark) hand over within the spin, at
 * the cost of a cache line; a core that has gone to sleep takes tens to
 * hundreds of microseconds to wake (more under a hypervisor), longer than a
 * whole step at n = 32.  A loop that waits for its sensor sleeps after this. */
#define RTRL_POOL_SPIN_NS 100000L

static inline long long rtrl_pool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void rtrl_pool_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* One turn of a bounded spin (i counts turns from 1): pauses the core, and
 * every 256 turns reads the clock; returns 1 once RTRL_POOL_SPIN_NS have
 * passed since the first reading, when the caller should sleep instead. */
static inline int rtrl_pool_spun_out(unsigned int i, long long *limit)
{
    rtrl_pool_relax();
    if ((i & 255u) != 0)
        return 0;
    long long now = rtrl_pool_now_ns();
    if (*limit == 0)
        *limit = now + RTRL_POOL_SPIN_NS;
    return now > *limit;
}

/* Spin until *word != value (or stop is set), for at most RTRL_POOL_SPIN_NS;
 * returns whether it changed. */
static inline int rtrl_pool_spin_ul(rtrl_pool *pool, const unsigned long *word,
                                    unsigned long value)
{
    long long limit = 0;
    for (unsigned int i = 1;; ++i) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != value
                || __atomic_load_n(&pool->stop, __ATOMIC_ACQUIRE))
            return 1;
        if (rtrl_pool_spun_out(i, &limit))
            return 0;
    }
}

static void *rtrl_pool_main(void *arg)
{
    rtrl_worker *me = (rtrl_worker *)arg;
    rtrl_pool *pool = me->pool;
    unsigned long seen = 0;
    /* The caller flushes subnormals to zero around every step; workers run
     * nothing else, so they do it for good (same results as one thread). */
    (void)rtrl_fpu_enter();
    for (;;) {
        if (!rtrl_pool_spin_ul(pool, &pool->round, seen)) {
            pthread_mutex_lock(&pool->mu);
            while (__atomic_load_n(&pool->round, __ATOMIC_ACQUIRE) == seen
                    && !__atomic_load_n(&pool->stop, __ATOMIC_ACQUIRE))
                pthread_cond_wait(&pool->wake, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (__atomic_load_n(&pool->stop, __ATOMIC_ACQUIRE))
            break;
        seen = __atomic_load_n(&pool->round, __ATOMIC_ACQUIRE);
        pool->task(pool->arg, me->part, pool->parts);
        if (__atomic_sub_fetch(&pool->busy, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
    return NULL;
}

static inline void rtrl_pool_free(rtrl_pool *pool);

/* A pool of `parts` - 1 workers, or NULL if memory or a thread could not be
 * had (nothing is left running then). */
static inline rtrl_pool *rtrl_pool_new(int parts)
{
    rtrl_pool *pool = (rtrl_pool *)calloc(1, sizeof *pool);
    if (pool == NULL)
        return NULL;
    pool->parts = parts;
    pool->pid = getpid();
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    pool->threads = (pthread_t *)calloc((size_t)parts, sizeof *pool->threads);
    pool->workers = (rtrl_worker *)calloc((size_t)parts, sizeof *pool->workers);
    if (pool->threads == NULL || pool->workers == NULL) {
        rtrl_pool_free(pool);
        return NULL;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, RTRL_POOL_STACK);
    for (int i = 1; i < parts; ++i) {
        pool->workers[i].pool = pool;
        pool->workers[i].part = i;
        if (pthread_create(&pool->threads[pool->started], &attr, rtrl_pool_main,
                           &pool->workers[i]) != 0) {
            pthread_attr_destroy(&attr);
            rtrl_pool_free(pool);
            return NULL;
        }
        ++pool->started;
    }
    pthread_attr_destroy(&attr);
    return pool;
}

/* task(arg, p, parts) for every p < parts, part 0 on the calling thread;
 * returns when all are done. */
static inline void rtrl_pool_run(rtrl_pool *pool, rtrl_task_fn task, void *arg)
{
    if (pool->started < pool->parts - 1 || getpid() != pool->pid) {
        for (int p = 0; p < pool->parts; ++p)   /* forked child: no workers */
            task(arg, p, pool->parts);
        return;
    }
    pool->task = task;
    pool->arg = arg;
    __atomic_store_n(&pool->busy, pool->parts - 1, __ATOMIC_RELAXED);
    /* Under the mutex, so that a worker about to sleep either sees the new
     * round first or is woken by the broadcast. */
    pthread_mutex_lock(&pool->mu);
    __atomic_add_fetch(&pool->round, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    task(arg, 0, pool->parts);
    long long limit = 0;
    for (unsigned int i = 1; __atomic_load_n(&pool->busy, __ATOMIC_ACQUIRE) > 0; ++i) {
        if (rtrl_pool_spun_out(i, &limit)) {
            pthread_mutex_lock(&pool->mu);
            while (__atomic_load_n(&pool->busy, __ATOMIC_ACQUIRE) > 0)
                pthread_cond_wait(&pool->done, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
            break;
        }
    }
}

/* Part `part` of `parts` of the range [0, total), cut at multiples of `unit`
 * so that the parts differ by at most one unit: [*lo, *hi). */
static inline void rtrl_pool_share(ptrdiff_t total, ptrdiff_t unit, int part, int parts,
                                   ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t units = (total + unit - 1) / unit;
    *lo = units * part / parts * unit;
    *hi = units * (part + 1) / parts * unit;
    if (*lo > total) *lo = total;
    if (*hi > total) *hi = total;
}

/* Stop and join the workers, then free the pool.  NULL is a no-op. */
static inline void rtrl_pool_free(rtrl_pool *pool)
{
    if (pool == NULL)
        return;
    if (getpid() == pool->pid) {    /* a forked child has no workers to join */
        pthread_mutex_lock(&pool->mu);
        __atomic_store_n(&pool->stop, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mu);
        for (int i = 0; i < pool->started; ++i)
            pthread_join(pool->threads[i], NULL);
    }
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    free(pool->threads);
    free(pool->workers);
    free(pool);
}

#endif /* RTRL_EDGE_POOL_H */
