# Work split across the model's thread pool (_pool.h): a task runs once per
# part, part 0 on the calling thread, the others on the workers.  Tasks that
# sum write their part's sum to s.part_sum[part] (and finiteness to
# s.part_ok[part]); `parts_total` adds them in part order, so a given number
# of threads always gives the same result.
from rtrl_edge._types cimport *


cdef inline int run_parts(RNN *s, rtrl_task_fn task, bint contract) noexcept nogil:
    """task(s, part, parts) for every part: on the pool's threads if the model
    has one, else in this thread as the one part.  Returns the parts run."""
    s.task_contract = contract
    if s.pool == NULL:
        task(s, 0, 1)
        return 1
    rtrl_pool_run(s.pool, task, s)
    return s.threads


cdef inline double parts_total(RNN *s, int parts, int *finite) noexcept nogil:
    """Sum of s.part_sum[:parts] in part order; *finite = all s.part_ok."""
    cdef double total = 0.0
    cdef int p
    finite[0] = 1
    for p in range(parts):
        total += s.part_sum[p]
        finite[0] = finite[0] and s.part_ok[p]
    return total
