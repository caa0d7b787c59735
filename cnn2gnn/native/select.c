/* The k smallest entries of each row of a float32 matrix, ascending: cnn2gnn's nearest-anchor selection on the CPU
 * (cnn2gnn/native/__init__.py builds and loads this file; cnn2gnn/select.py calls it).
 *
 * torch.topk copies and partially sorts every row; here three passes over a row of m entries find its k smallest:
 *   1. the minimum of each of b strided blocks (block t holds the entries t, t + b, t + 2b, ...): a vertical minimum
 *      over contiguous runs of b entries, which the compiler vectorises;
 *   2. tau, the k-th smallest of the b minima: k entries of the row are <= tau, so the k-th smallest entry is <= tau;
 *   3. the entries <= tau of the blocks whose minimum is <= tau (any other block holds only entries > tau): a few
 *      dozen candidates, from which the k smallest are kept in order.
 * b is about sqrt(m k / 2), which balances passes 2 and 3. Comparisons are on int32 keys that order as the floats do
 * (-0 equal to +0, NaN after every number, as torch.topk sorts it); ties go to the lower column, so the result is
 * exact and deterministic. Rows are shared among OpenMP threads (torch's thread count), each with its own buffers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* an int32 key that orders as the float does: -inf < ... < -0 = +0 < ... < +inf < NaN (either sign) */
static inline int32_t key_of(float v) {
    int32_t b;
    memcpy(&b, &v, sizeof b);
    int32_t magnitude = b & 0x7fffffff;
    int32_t key = magnitude == 0 ? 0 : b ^ ((b >> 31) & 0x7fffffff);
    return magnitude > 0x7f800000 ? INT32_MAX : key;
}

typedef struct {
    int32_t *mins, *keys, *cand_key;
    int64_t *idx, *cand_idx;
} work_t;

static void select_row(const float *row, int64_t m, int64_t k, int64_t blocks, work_t *w) {
    int64_t len = 0;
    if (blocks == 0) { /* a short row: one pass */
        for (int64_t j = 0; j < m; j++) keep(w->keys, w->idx, k, &len, key_of(row[j]), j);
        return;
    }
    int32_t *mins = w->mins;
    for (int64_t t = 0; t < blocks; t++) mins[t] = key_of(row[t]);
    for (int64_t s = blocks; s < m; s += blocks) {
        const float *r = row + s;
        int64_t width = m - s < blocks ? m - s : blocks;
        for (int64_t t = 0; t < width; t++) {
            int32_t q = key_of(r[t]);
            mins[t] = q < mins[t] ? q : mins[t];
        }
    }
    for (int64_t t = 0; t < blocks; t++) keep(w->keys, w->idx, k, &len, mins[t], t);
    int32_t tau = w->keys[k - 1];
    int64_t c = 0;
    for (int64_t t = 0; t < blocks; t++) {
        if (mins[t] > tau) continue;
        for (int64_t j = t; j < m; j += blocks) { /* branch-free: a candidate is kept by advancing c */
            int32_t q = key_of(row[j]);
            w->cand_key[c] = q;
            w->cand_idx[c] = j;
            c += q <= tau;
        }
    }
    len = 0;
    for (int64_t l = 0; l < c; l++) keep(w->keys, w->idx, k, &len, w->cand_key[l], w->cand_idx[l]);
}

/* d: (n, m) row-major; 1 <= k <= m; out_d, out_i: (n, k); rows shared among `threads` OpenMP threads (torch's own
 * pool when built with -fopenmp next to torch's libgomp). Returns 0, or 1 when out of memory. */
int cnn2gnn_select(const float *d, int64_t n, int64_t m, int64_t k, float *out_d, int64_t *out_i, int threads) {
    int64_t blocks = 0;
    if (m >= 4 * k && m >= 64) {
        blocks = 16;
        while (2 * blocks * blocks < m * k) blocks += 16;
    }
    threads = team(threads, n, 16); /* at least 16 rows a thread */
    int64_t cap = m + 1; /* candidates: all entries at worst (a row of ties) */
    size_t each = (size_t)(k + cap) * sizeof(int64_t) + (size_t)(blocks + k + cap) * sizeof(int32_t);
    char *mem = scratch(&each, threads);
    if (!mem) return 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t i = 0; i < n; i++) {
        char *mine = thread_scratch(mem, each);
        work_t w;
        w.idx = (int64_t *)mine;
        w.cand_idx = w.idx + k;
        w.mins = (int32_t *)(w.cand_idx + cap);
        w.keys = w.mins + blocks;
        w.cand_key = w.keys + k;
        const float *row = d + i * m;
        select_row(row, m, k, blocks, &w);
        for (int64_t l = 0; l < k; l++) {
            out_i[i * k + l] = w.idx[l];
            out_d[i * k + l] = row[w.idx[l]];
        }
    }
    free(mem);
    return 0;
}
