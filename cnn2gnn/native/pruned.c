/* The k nearest rows of a fixed bank for each query, exactly, computing most distances only in part: the anchor
 * search of cnn2gnn for banks whose points vary mostly along a few directions, as a learned graph space does
 * (cnn2gnn/native/__init__.py builds and loads this file; cnn2gnn/native/pruned.py packs the bank and calls it).
 *
 * The bank and the queries are expressed in the bank's principal axes (an orthogonal change of basis, which keeps
 * distances), the first P axes apart ("head") from the others ("tail"). For a query q and an anchor a,
 *
 *     lb(a) = sum_{t < P} (q_t - a_t)^2   <=   d(a) = lb(a) + sum_{t >= P} (q_t - a_t)^2,
 *
 * in floating point too (adding a non-negative tail never lowers a float). So an anchor with lb(a) > tau, tau being
 * the distance of the k-th nearest of any k anchors, is not among the k nearest, and its tail is never read:
 *   1. lb of every anchor (P multiply-adds per anchor, vectorised over blocks of L anchors, for R queries at a time so
 *      that the bank's head is read once per R queries), and the minimum of each of G >= k groups of anchors (group:
 *      the block's position modulo G / L and the lane);
 *   2. tau0, the k-th smallest of the G minima: at least k anchors have lb <= tau0. Their full distances make the
 *      running list of the k nearest, whose k-th distance tau bounds the answer;
 *   3. the anchors with tau0 < lb <= tau (tau falling as the list improves) complete the list.
 * The list keeps int32 keys that order as the distances do, ties going to the lower position, as nearest.c does, so
 * the result is the exact k-NN of these distances. A query with a coordinate that is not finite is compared with
 * every anchor (NaN sorts last). Rows are shared among OpenMP threads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "vectors.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define MOST_HEAD 16 /* P <= MOST_HEAD */
#define MOST_VECS 8  /* k <= MOST_VECS L: the groups' minima fill at most MOST_VECS vectors */
/* R: queries whose bounds are computed together, each vector of the head read once for them (2 R accumulators: 8
 * queries with AVX-512's 32 vector registers, 4 with 16) */
#if defined(__AVX512F__)
#define R 8
#else
#define R 4
#endif
#define BATCH 64     /* anchors whose full distances are computed together */

/* the key of a distance x >= +0 or NaN: its bits, which order as the values do; NaN -> INT32_MAX */
static inline int32_t key_of_distance(float x) {
    int32_t b;
    memcpy(&b, &x, sizeof b);
    return x != x ? INT32_MAX : b;
}

static inline float distance_of_key(int32_t key) {
    float x;
    memcpy(&x, &key, sizeof x); /* INT32_MAX is a NaN */
    return x;
}

/* lb + the tail part of anchor j's squared distance to the query's tail qt (W floats, a multiple of L) */
static inline float full_distance(float lb, const float *qt, const float *tail, int64_t W, int64_t j) {
    const float *a = tail + j * W;
    vf acc = splat(0.0f);
    for (int64_t t = 0; t < W; t += L) {
        vf x = load_f(qt + t) - load_f(a + t);
        acc += x * x;
    }
#if defined(__AVX512F__)
    return lb + _mm512_reduce_add_ps((__m512)acc);
#else
    float sum = 0.0f;
    for (int l = 0; l < L; l++) sum += acc[l];
    return lb + sum;
#endif
}

/* offer every anchor j < m with lo < lb_j <= cap and lb_j <= the list's k-th key once it is full: the anchors that
 * pass are collected BATCH at a time, their full distances computed together (independent loads of their tails,
 * which overlap), then offered in position order; the list's k-th key bounds the next batch */
static void scan(const int32_t *lb, int64_t m, int64_t padded, int32_t lo, int32_t cap, const float *qt,
                 const float *tail, int64_t W, int64_t k, int32_t *keys, int64_t *idx, int64_t *len, int64_t *seen) {
    int32_t at[BATCH + L], got[BATCH + L]; /* room for one more vector's worth past a full batch */
    int64_t found = 0;
    int32_t hi = *len == k && keys[k - 1] < cap ? keys[k - 1] : cap;
    for (int64_t j0 = 0; j0 < padded; j0 += L) {
#if defined(__AVX512F__)
        __m512i x = _mm512_loadu_si512((const void *)(lb + j0));
        __mmask16 bits = _mm512_cmple_epi32_mask(x, _mm512_set1_epi32(hi)) &
                         _mm512_cmpgt_epi32_mask(x, _mm512_set1_epi32(lo));
        __m512i cols = _mm512_add_epi32(_mm512_set1_epi32((int32_t)j0),
                                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        _mm512_mask_compressstoreu_epi32(at + found, bits, cols);
        found += __builtin_popcount(bits);
#else
#if defined(__AVX2__)
        __m256i x = _mm256_loadu_si256((const __m256i *)(lb + j0));
        __m256i out = _mm256_or_si256(_mm256_cmpgt_epi32(x, _mm256_set1_epi32(hi)),
                                      _mm256_cmpgt_epi32(_mm256_set1_epi32(lo + 1), x)); /* x > hi or x <= lo */
        unsigned bits = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(out)) & 0xffu;
#else
        unsigned bits = 0;
        for (int l = 0; l < L; l++) bits |= (unsigned)(lb[j0 + l] > lo && lb[j0 + l] <= hi) << l;
#endif
        for (; bits; bits &= bits - 1) at[found++] = (int32_t)(j0 + __builtin_ctz(bits));
#endif
        if (found < BATCH && j0 + L < padded) continue;
        while (found && at[found - 1] >= m) found--; /* padding (+inf bounds) sorts after every anchor */
        for (int64_t c = 0; c < found; c++)
            got[c] = key_of_distance(full_distance(distance_of_key(lb[at[c]]), qt, tail, W, at[c]));
        for (int64_t c = 0; c < found; c++) keep(keys, idx, k, len, got[c], at[c]);
        *seen += found;
        found = 0;
        hi = *len == k && keys[k - 1] < cap ? keys[k - 1] : cap;
    }
}

/* 1. the bounds of R queries (rows: their first P coordinates) to every anchor, as keys, into lb (R rows of padded),
 * and each query's group minima (group: the block's position modulo vecs, and the lane); two blocks at a time, each
 * vector of the head read once for the R queries */
static void bounds(const float *const *rows, const float *head, int64_t blocks, int64_t P, int64_t vecs,
                   int64_t padded, int32_t *lb, vi mins[R][MOST_VECS]) {
    for (int r = 0; r < R; r++)
        for (int64_t v = 0; v < vecs; v++) mins[r][v] = splat_i(INT32_MAX);
    for (int64_t b = 0, g = 0; b < blocks; b += 2) {
        int64_t b1 = b + 1 < blocks ? b + 1 : b; /* a last odd block is computed twice and kept once */
        vf acc[R][2];
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = splat(0.0f);
        for (int64_t t = 0; t < P; t++) {
            vf h0 = load_f(head + (b * P + t) * L), h1 = load_f(head + (b1 * P + t) * L);
            for (int r = 0; r < R; r++) {
                vf s = splat(rows[r][t]), x0 = s - h0, x1 = s - h1;
                acc[r][0] += x0 * x0;
                acc[r][1] += x1 * x1;
            }
        }
        for (int u = 0; u < 1 + (b1 > b); u++, g = g + 1 == vecs ? 0 : g + 1)
            for (int r = 0; r < R; r++) {
                vi key = (vi)acc[r][u], lt = key < mins[r][g]; /* finite or +inf, never -0: bits order as values */
                mins[r][g] = (key & lt) | (mins[r][g] & ~lt);
                memcpy(lb + r * padded + (b + u) * L, &key, sizeof key);
            }
    }
}

/* q: (n, P + W) in the bank's axes (row stride ldq; zeros past the bank's dimension); head: the first P coordinates
 * of the m anchors in blocks of L, dimension-major (anchor b L + l's coordinate t at (b P + t) L + l, +inf past m);
 * tail: (m, W) the others, row-major, W a multiple of L. out_d, out_i: (n, k), squared distances ascending and their
 * anchors; *seen: how many full distances were computed (all queries). Returns 0; 1 when out of memory; 2 unless
 * 1 <= k <= m, k <= MOST_VECS L and 1 <= P <= MOST_HEAD. */
int cnn2gnn_pruned(const float *q, int64_t ldq, const float *head, const float *tail, int64_t n, int64_t m, int64_t P,
                   int64_t W, int64_t k, float *out_d, int64_t *out_i, int threads, int64_t *seen) {
    int64_t blocks = (m + L - 1) / L, padded = blocks * L, vecs = (k + L - 1) / L, tiles = (n + R - 1) / R;
    if (k < 1 || k > m || vecs > MOST_VECS || P < 1 || P > MOST_HEAD) return 2;
    threads = team(threads, tiles, 16 / R); /* at least 16 queries a thread */
    size_t each = (size_t)(R * padded + 2 * k) * sizeof(int32_t) + (size_t)(2 * k) * sizeof(int64_t);
    char *mem = scratch(&each, threads);
    if (!mem) return 1;
    int64_t total = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : total)
#endif
    for (int64_t tile = 0; tile < tiles; tile++) {
        char *mine = thread_scratch(mem, each);
        int64_t *idx = (int64_t *)mine, *ti = idx + k;
        int32_t *keys = (int32_t *)(ti + k), *tk = keys + k, *lb = tk + k;
        const float *rows[R];
        for (int r = 0; r < R; r++) /* a last tile of fewer queries repeats its last one */
            rows[r] = q + (tile * R + r < n ? tile * R + r : n - 1) * ldq;
        vi mins[R][MOST_VECS];
        bounds(rows, head, blocks, P, vecs, padded, lb, mins);
        for (int r = 0; r < R && tile * R + r < n; r++) {
            const int64_t i = tile * R + r;
            const float *qi = rows[r], *qt = qi + P;
            int finite = 1;
            for (int64_t t = 0; t < P + W; t++) finite &= qi[t] - qi[t] == 0.0f; /* false for inf and NaN */
            int64_t len = 0, count = 0;
            if (!finite) { /* every anchor, its head part from the packed blocks */
                for (int64_t j = 0; j < m; j++) {
                    float s = 0.0f;
                    for (int64_t t = 0; t < P; t++) {
                        float x = qi[t] - head[((j / L) * P + t) * L + j % L];
                        s += x * x;
                    }
                    keep(keys, idx, k, &len, key_of_distance(full_distance(s, qt, tail, W, j)), j);
                }
                count = m;
            } else {
                int32_t tau0; /* 2. the k-th smallest minimum (at least k groups hold an anchor: k <= m) */
#if defined(__AVX512F__) || defined(__AVX2__)
                if (vecs == 1)
                    tau0 = kth_lane(mins[r][0], k);
                else
#endif
                {
                    int64_t found = 0;
                    for (int64_t v = 0; v < vecs; v++)
                        for (int l = 0; l < L; l++) keep(tk, ti, k, &found, mins[r][v][l], v * L + l);
                    tau0 = tk[k - 1];
                }
                const int32_t *own = lb + r * padded;
                scan(own, m, padded, -1, tau0, qt, tail, W, k, keys, idx, &len, &count);          /* the list fills */
                scan(own, m, padded, tau0, INT32_MAX, qt, tail, W, k, keys, idx, &len, &count); /* 3. */
            }
            total += count;
            for (int64_t l = 0; l < k; l++) {
                out_d[i * k + l] = distance_of_key(keys[l]);
                out_i[i * k + l] = idx[l];
            }
        }
    }
    free(mem);
    *seen = total;
    return 0;
}
