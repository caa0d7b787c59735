/* The k nearest rows of a fixed bank for each query, by squared Euclidean distance: cnn2gnn's exact anchor search on
 * the CPU (cnn2gnn/native/__init__.py builds and loads this file; cnn2gnn/search.py calls it).
 *
 * The torch path computes the (n, m) distances with one matrix product, adds the query norms, clamps at zero and
 * selects from the result: four passes over an (n, m) matrix. Here the distances of R queries to 2 L anchors at a
 * time stay in vector registers (L lanes: 16 with AVX-512, 8 with AVX, 4 otherwise), written once as int32 keys to a
 * per-thread row buffer that stays in cache, and the k smallest are selected from it while it is hot:
 *
 *     d_ij = max(0, (|a_j|^2 - 2 q_i . a_j) + |q_i|^2)          (as cnn2gnn.graph.pairwise_sq_dists computes it)
 *
 *   1. the minimum of each of G groups of the row (group g: the columns = g mod G, G a multiple of L, G >= k);
 *   2. tau, the k-th smallest of the G minima: k entries are <= tau, so the k-th smallest entry is <= tau;
 *   3. the entries <= tau (a few more than k), kept in order.
 * The bank is packed once (cnn2gnn_nearest_pack) into blocks of L anchors, dimension-major, so that each step of the
 * product is one vector load and one fused multiply-add per query. Keys order as the distances do (NaN last, as
 * torch.topk sorts it); ties go to the lower column: the result is the exact k-NN of these distances, which differ
 * from the torch path's only in the rounding of the dot products. Rows are shared among OpenMP threads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#define L 16
#elif defined(__AVX__)
#define L 8
#else
#define L 4
#endif
#define R 4 /* queries computed together */
#define MOST_GROUPS (8 * L)

typedef float vf __attribute__((vector_size(L * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(L * sizeof(int32_t))));

static inline vf load_f(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline vi load_i(const int32_t *p) {
    vi v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline vf splat(float s) { return s - (vf){0}; } /* s - (+0) is s for every float: folded to a broadcast */
static inline vi splat_i(int32_t s) { return (vi){0} + s; }

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

/* the vector width this build computes with (the caller uses the kernel only where it pays: 8 or more) */
int cnn2gnn_nearest_lanes(void) { return L; }

/* the bank's rows, rounded up to whole pairs of blocks (the packed buffers' length, in rows) */
int64_t cnn2gnn_nearest_padded(int64_t m) { return (m + 2 * L - 1) / (2 * L) * (2 * L); }

/* a: (m, d), row stride lda; asq: (m,). out: padded(m) * d floats, anchor b L + l's coordinate e at
 * (b d + e) L + l (zeros past m); out_sq: padded(m) floats, NaN past m (a padded column sorts last and is skipped) */
void cnn2gnn_nearest_pack(const float *a, int64_t lda, const float *asq, int64_t m, int64_t d, float *out,
                          float *out_sq) {
    int64_t mp = cnn2gnn_nearest_padded(m);
    for (int64_t j = 0; j < mp; j++) {
        int64_t b = j / L, l = j % L;
        for (int64_t e = 0; e < d; e++) out[(b * d + e) * L + l] = j < m ? a[j * lda + e] : 0.0f;
        out_sq[j] = j < m ? asq[j] : __builtin_nanf("");
    }
}

/* keys of distances x >= -0 or NaN: their bits, which order as the values do; -0 -> 0; NaN -> INT32_MAX */
static inline vi keys_of(vf x) {
    vi most = splat_i(INT32_MAX), b = (vi)x & most;
    vi nan = b > splat_i(0x7f800000);
    return (b & ~nan) | (nan & most);
}

/* the squared distances of R queries (rows q[0..R-1], norms qsq) to all padded anchors, as keys, into buf (R rows of
 * mp) */
static void distances(const float *const *q, const float *qsq, const float *packed, const float *psq, int64_t mp,
                      int64_t d, int32_t *buf) {
    for (int64_t b = 0; b < mp / L; b += 2) {
        const float *p0 = packed + b * d * L, *p1 = p0 + d * L;
        vf a00 = splat(0.0f), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
        for (int64_t e = 0; e < d; e++) {
            vf x0 = load_f(p0 + e * L), x1 = load_f(p1 + e * L);
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
            __asm__("" : "+x"(x0), "+x"(x1)); /* two loads, each used by four FMAs (not folded into each of them) */
#endif
            vf s0 = splat(q[0][e]), s1 = splat(q[1][e]), s2 = splat(q[2][e]), s3 = splat(q[3][e]);
            a00 += x0 * s0;
            a01 += x1 * s0;
            a10 += x0 * s1;
            a11 += x1 * s1;
            a20 += x0 * s2;
            a21 += x1 * s2;
            a30 += x0 * s3;
            a31 += x1 * s3;
        }
        vf sq0 = load_f(psq + b * L), sq1 = load_f(psq + (b + 1) * L), zero = splat(0.0f);
        vf dot[R][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
        for (int r = 0; r < R; r++)
            for (int c = 0; c < 2; c++) {
                vf x = ((c ? sq1 : sq0) - splat(2.0f) * dot[r][c]) + splat(qsq[r]);
                x = (vf)((vi)x & ~(x < zero)); /* max(0, x), NaN kept */
                vi keys = keys_of(x);
                memcpy(buf + r * mp + (b + c) * L, &keys, sizeof keys);
            }
    }
}

/* the k smallest keys of row (m real entries of mp) in ascending order, ties to the lower column; ck/ci: room for mp */
static void select_row(const int32_t *row, int64_t m, int64_t mp, int64_t k, int32_t *keys, int64_t *idx,
                       int32_t *ck, int64_t *ci) {
    int64_t groups = (k + L - 1) / L * L, len = 0, c = 0;
    int32_t tau = INT32_MAX;
    if (groups <= MOST_GROUPS && mp >= 2 * groups) { /* entries past the last whole stride belong to no group */
        vi mins[MOST_GROUPS / L];
        int64_t vecs = groups / L;
        for (int64_t v = 0; v < vecs; v++) mins[v] = load_i(row + v * L);
        if (vecs == 1) { /* k <= L, the usual case: one vector of minima, from two independent running ones */
            vi lo = mins[0], hi = load_i(row + L);
            for (int64_t j = 2 * L; j < mp; j += 2 * L) { /* mp is a whole number of pairs of vectors */
                vi x = load_i(row + j), y = load_i(row + j + L), lx = x < lo, ly = y < hi;
                lo = (x & lx) | (lo & ~lx);
                hi = (y & ly) | (hi & ~ly);
            }
            vi lt = hi < lo;
            mins[0] = (hi & lt) | (lo & ~lt);
        } else
            for (int64_t j = groups; j + groups <= mp; j += groups)
                for (int64_t v = 0; v < vecs; v++) {
                    vi x = load_i(row + j + v * L), lt = x < mins[v];
                    mins[v] = (x & lt) | (mins[v] & ~lt);
                }
        for (int64_t v = 0; v < vecs; v++)
            for (int l = 0; l < L; l++) keep(keys, idx, k, &len, mins[v][l], v * L + l);
        tau = keys[k - 1]; /* the padded columns' keys are INT32_MAX: a group minimum is a real entry or the max */
    }
#if defined(__AVX512F__)
    __m512i t = _mm512_set1_epi32(tau);
    for (int64_t j = 0; j < mp; j += L) {
        __mmask16 bits = _mm512_cmple_epi32_mask(_mm512_loadu_si512((const void *)(row + j)), t);
        for (; bits; bits &= bits - 1) {
            int64_t at = j + __builtin_ctz(bits);
            ck[c] = row[at];
            ci[c] = at;
            c += at < m;
        }
    }
#elif defined(__AVX2__)
    __m256i t = _mm256_set1_epi32(tau);
    for (int64_t j = 0; j < mp; j += 8) { /* row <= tau: not (row > tau) */
        __m256i gt = _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)(row + j)), t);
        unsigned bits = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(gt)) & 0xffu;
        for (; bits; bits &= bits - 1) {
            int64_t at = j + __builtin_ctz(bits);
            ck[c] = row[at];
            ci[c] = at;
            c += at < m;
        }
    }
#else
    for (int64_t j = 0; j < m; j++) {
        ck[c] = row[j];
        ci[c] = j;
        c += row[j] <= tau;
    }
#endif
    len = 0;
    for (int64_t l = 0; l < c; l++) keep(keys, idx, k, &len, ck[l], ci[l]);
}

/* q: (n, d), row stride ldq; packed, psq: from cnn2gnn_nearest_pack over m anchors; 1 <= k <= m.
 * out_d, out_i: (n, k), squared distances ascending and their anchors. Returns 0, or 1 when out of memory. */
int cnn2gnn_nearest(const float *q, int64_t ldq, const float *packed, const float *psq, int64_t n, int64_t m,
                    int64_t d, int64_t k, float *out_d, int64_t *out_i, int threads) {
    int64_t mp = cnn2gnn_nearest_padded(m), tiles = (n + R - 1) / R;
    int64_t most = tiles / 4; /* at least 4 tiles (16 queries) a thread */
    if (threads > most) threads = most > 1 ? (int)most : 1;
#ifndef _OPENMP
    threads = 1;
#endif
    size_t each = (size_t)(R * mp + mp + k) * sizeof(int32_t) + (size_t)(mp + k) * sizeof(int64_t);
    char *mem = malloc(each * (size_t)threads);
    if (!mem) return 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t tile = 0; tile < tiles; tile++) {
#ifdef _OPENMP
        char *mine = mem + each * (size_t)omp_get_thread_num();
#else
        char *mine = mem;
#endif
        int64_t *idx = (int64_t *)mine, *ci = idx + k;
        int32_t *buf = (int32_t *)(ci + mp), *ck = buf + R * mp, *keys = ck + mp;
        const float *rows[R];
        float qsq[R];
        int64_t i0 = tile * R;
        for (int r = 0; r < R; r++) { /* a last tile of fewer queries repeats its last one */
            rows[r] = q + (i0 + r < n ? i0 + r : n - 1) * ldq;
            float s = 0.0f;
            for (int64_t e = 0; e < d; e++) s += rows[r][e] * rows[r][e];
            qsq[r] = s;
        }
        distances(rows, qsq, packed, psq, mp, d, buf);
        for (int r = 0; r < R && i0 + r < n; r++) {
            select_row(buf + r * mp, m, mp, k, keys, idx, ck, ci);
            for (int64_t l = 0; l < k; l++) {
                float v;
                memcpy(&v, &keys[l], sizeof v); /* a key is the distance's bits (NaN: 0x7fffffff, a NaN) */
                out_d[(i0 + r) * k + l] = v;
                out_i[(i0 + r) * k + l] = idx[l];
            }
        }
    }
    free(mem);
    return 0;
}
