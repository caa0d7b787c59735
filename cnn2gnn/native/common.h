/* Shared by the native kernels (select.c, nearest.c): an ascending list of at most k (int32 key, column) pairs,
 * ordered by key then column, so that ties go to the lower column and the result is exact and deterministic; and each
 * OpenMP thread's part of one scratch allocation. */
#ifndef CNN2GNN_COMMON_H
#define CNN2GNN_COMMON_H
#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* insert (key, j) into the ascending list keys/idx of *len (at most k) entries, ordered by key then column */
static inline void keep(int32_t *keys, int64_t *idx, int64_t k, int64_t *len, int32_t key, int64_t j) {
    if (*len == k && (key > keys[k - 1] || (key == keys[k - 1] && j > idx[k - 1]))) return;
    int64_t p = *len < k ? (*len)++ : k - 1;
    while (p > 0 && (keys[p - 1] > key || (keys[p - 1] == key && idx[p - 1] > j))) {
        keys[p] = keys[p - 1];
        idx[p] = idx[p - 1];
        p--;
    }
    keys[p] = key;
    idx[p] = j;
}

/* the calling thread's `each` bytes of `mem` (one block per thread of the parallel region) */
static inline char *thread_scratch(char *mem, size_t each) {
#ifdef _OPENMP
    return mem + each * (size_t)omp_get_thread_num();
#else
    (void)each;
    return mem;
#endif
}

#endif
