/* Shared by the native kernels (select.c, nearest.c, pruned.c, weights.c, anchors.c): the kernels one file calls in
 * another; an ascending list of at most k (int32 key, column) pairs, ordered by key then column, so that ties go to
 * the lower column and the result is exact and deterministic; the size of a thread team; and each OpenMP thread's
 * part of one scratch allocation. */
#ifndef CNN2GNN_COMMON_H
#define CNN2GNN_COMMON_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* the kernels one file calls in another (anchors.c: the fast path's search and pass in one call); declared here so
 * that their definitions (nearest.c, weights.c) are checked against the same signatures */
int cnn2gnn_nearest(const float *q, int64_t ldq, const float *packed, const float *psq, int64_t n, int64_t m,
                    int64_t d, int64_t k, float *out_d, int64_t *out_i, int threads);
int64_t cnn2gnn_propagate(const float *dist, const int64_t *positions, int64_t n, int64_t K, int64_t k, double eps,
                          const float *messages, int64_t m, int64_t width, const float *bias, const float *base,
                          int64_t ldb, int64_t nbase, int64_t nrelu, const float *head, int64_t nh, float *out,
                          int threads);

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

/* the threads to share `units` of work among: at most `threads`, each given at least `least` units (a few are not
 * worth waking a thread); 1 without OpenMP */
static inline int team(int threads, int64_t units, int64_t least) {
#ifdef _OPENMP
    int64_t most = units / least;
    return threads > most ? (most > 1 ? (int)most : 1) : threads;
#else
    (void)threads, (void)units, (void)least;
    return 1;
#endif
}

/* one scratch allocation holding `*each` bytes (rounded up here to whole cache lines) for each of `threads` threads;
 * NULL when out of memory */
static inline char *scratch(size_t *each, int threads) {
    *each = (*each + 63) / 64 * 64;
    return malloc(*each * (size_t)threads);
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
