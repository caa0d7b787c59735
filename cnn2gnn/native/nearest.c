/* The k nearest rows of a fixed bank for each query, by squared Euclidean distance: cnn2gnn's exact anchor search on
 * the CPU (cnn2gnn/native/__init__.py builds and loads this file; cnn2gnn/search.py calls it).
 *
 * The torch path computes the (n, m) distances with one matrix product, adds the query norms, clamps at zero and
 * selects from the result: four passes over an (n, m) matrix. Here the distances of R queries to 2 L anchors at a
 * time stay in vector registers (L lanes: 16 with AVX-512, 8 with AVX, 4 otherwise), written once as int32 keys to a
 * per-thread buffer that stays in cache, and merged while it is hot into each query's running list of its k nearest:
 *
 *     d_ij = max(0, (|a_j|^2 - 2 q_i . a_j) + |q_i|^2)          (as cnn2gnn.graph.pairwise_sq_dists computes it)
 *
 *   1. the minimum of each of G groups of the chunk (group g: the columns = g mod G, G a multiple of L, G >= k);
 *   2. tau, the k-th smallest of the G minima (k entries are <= it), or the list's k-th key if that is smaller;
 *   3. the entries <= tau (a few more than k at first, fewer later), merged into the list in order.
 * The bank is packed once (cnn2gnn_nearest_pack) into blocks of L anchors, dimension-major, so that each step of the
 * product is one vector load per L anchors and one fused multiply-add per query; it is read in chunks of CHUNK
 * floats, each used by a group of up to GROUP tiles of R queries before the next, so a bank larger than the cache is
 * streamed once per group rather than once per tile. Keys order as the distances do (NaN last, as
 * torch.topk sorts it); ties go to the lower column: the result is the exact k-NN of these distances, which differ
 * from the torch path's only in the rounding of the dot products. Rows are shared among OpenMP threads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "vectors.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define R 4 /* queries computed together */
#define MOST_GROUPS (8 * L)
#define CHUNK 65536 /* floats of the packed bank read at a time (256 KiB) */
#define GROUP 16   /* tiles that share each chunk */

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

/* the k smallest (key, column) pairs of the list keys/idx (*len entries) and of `found` candidates (keys ck, columns
 * base + cc), ordered by key then column, into the list: each pair as the int64 key << 32 | column (keys are >= 0, so
 * these order as the pairs do, and are distinct, the columns being so); a pair's place is the number of pairs before
 * it, counted in vector registers, and one of place < k is written there: no branch on the data, where keep's
 * insertions mispredict about once each. *len + found <= MERGE_MOST, columns below 2^31. */
#define MERGE_MOST 64
typedef int64_t vl __attribute__((vector_size(L * sizeof(int32_t)))); /* L / 2 int64 lanes */
#define LL (L / 2)
static void merge_ranked(int32_t *keys, int64_t *idx, int64_t k, int64_t *len, const int32_t *ck, const int32_t *cc,
                         int64_t base, int64_t found) {
    int64_t pairs[MERGE_MOST + LL], placed[MERGE_MOST + 1], total = *len + found;
    for (int64_t i = 0; i < *len; i++) pairs[i] = (int64_t)keys[i] << 32 | idx[i];
    for (int64_t c = 0; c < found; c++) pairs[*len + c] = (int64_t)ck[c] << 32 | (base + cc[c]);
    int64_t vecs = (total + LL - 1) / LL;
    for (int64_t i = total; i < vecs * LL; i++) pairs[i] = INT64_MAX; /* after every pair */
    for (int64_t i = 0; i < total; i++) {
        vl before = {0}, p = (vl){0} + pairs[i];
        for (int64_t v = 0; v < vecs; v++) {
            vl x;
            memcpy(&x, pairs + v * LL, sizeof x);
            before -= x < p; /* a true comparison is -1 */
        }
        int64_t place = 0;
        for (int l = 0; l < LL; l++) place += before[l];
        placed[place < k ? place : MERGE_MOST] = pairs[i]; /* the last place: pairs that do not make the list */
    }
    *len = total < k ? total : k;
    for (int64_t r = 0; r < *len; r++) {
        keys[r] = (int32_t)(placed[r] >> 32);
        idx[r] = placed[r] & INT32_MAX;
    }
}

/* merge the entries of one chunk of a row's keys (width entries, the bank's columns base..base + width - 1, of which
 * those >= m are padding) into the row's running list keys/idx of *len (at most k): only the entries <= tau are
 * offered, tau being the list's k-th key once it is full and the chunk's own bound (the k-th smallest of its group
 * minima: the chunk holds k entries <= it, so a larger entry is not among the k nearest); tk/ti: room for k; cand:
 * room for 2 width */
static void select_chunk(const int32_t *row, int64_t base, int64_t m, int64_t width, int64_t k, int32_t *keys,
                         int64_t *idx, int64_t *len, int32_t *tk, int64_t *ti, int32_t *cand) {
    int64_t groups = (k + L - 1) / L * L;
    int32_t tau = *len == k ? keys[k - 1] : INT32_MAX;
    if (groups <= MOST_GROUPS && width >= 2 * groups) { /* entries past the last whole stride belong to no group */
        vi mins[MOST_GROUPS / L];
        int64_t vecs = groups / L, found = 0;
        for (int64_t v = 0; v < vecs; v++) mins[v] = load_i(row + v * L);
        if (vecs == 1) { /* k <= L, the usual case: one vector of minima, from two independent running ones */
            vi lo = mins[0], hi = load_i(row + L);
            for (int64_t j = 2 * L; j < width; j += 2 * L) { /* width is a whole number of pairs of vectors */
                vi x = load_i(row + j), y = load_i(row + j + L), lx = x < lo, ly = y < hi;
                lo = (x & lx) | (lo & ~lx);
                hi = (y & ly) | (hi & ~ly);
            }
            vi lt = hi < lo;
            mins[0] = (hi & lt) | (lo & ~lt);
        } else
            for (int64_t j = groups; j + groups <= width; j += groups)
                for (int64_t v = 0; v < vecs; v++) {
                    vi x = load_i(row + j + v * L), lt = x < mins[v];
                    mins[v] = (x & lt) | (mins[v] & ~lt);
                }
        int32_t bound; /* the k-th smallest minimum; padding's keys are INT32_MAX: a real entry or the max */
#if defined(__AVX512F__) || defined(__AVX2__)
        if (vecs == 1)
            bound = kth_lane(mins[0], k);
        else
#endif
        {
            for (int64_t v = 0; v < vecs; v++)
                for (int l = 0; l < L; l++) keep(tk, ti, k, &found, mins[v][l], v * L + l);
            bound = tk[k - 1];
        }
        if (bound < tau) tau = bound;
    }
    /* the entries <= tau and their columns gathered in column order (a loop without branches on AVX-512), then
     * merged into the list */
    int32_t *at = cand + width; /* the candidates' keys in cand, their columns in at */
    int64_t found = 0;
#if defined(__AVX512F__)
    /* which vectors hold an entry <= tau, 64 vectors a word (few do: about k of the width's entries pass), then only
     * those compressed */
    __m512i t = _mm512_set1_epi32(tau);
    for (int64_t w0 = 0; w0 < width; w0 += 64 * L) {
        uint64_t hits = 0;
        for (int64_t v = 0; v < 64 && w0 + v * L < width; v++)
            hits |= (uint64_t)(_mm512_cmple_epi32_mask(_mm512_loadu_si512((const void *)(row + w0 + v * L)), t) != 0)
                    << v;
        for (; hits; hits &= hits - 1) {
            int64_t j = w0 + __builtin_ctzll(hits) * L;
            __m512i x = _mm512_loadu_si512((const void *)(row + j));
            __mmask16 bits = _mm512_cmple_epi32_mask(x, t);
            __m512i col = _mm512_add_epi32(_mm512_set1_epi32((int32_t)j),
                                           _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
            _mm512_mask_compressstoreu_epi32(cand + found, bits, x);
            _mm512_mask_compressstoreu_epi32(at + found, bits, col);
            found += __builtin_popcount(bits);
        }
    }
#elif defined(__AVX2__)
    __m256i t = _mm256_set1_epi32(tau);
    for (int64_t j = 0; j < width; j += 8) { /* row <= tau: not (row > tau) */
        __m256i gt = _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)(row + j)), t);
        unsigned bits = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(gt)) & 0xffu;
        for (; bits; bits &= bits - 1, found++) {
            at[found] = (int32_t)(j + __builtin_ctz(bits));
            cand[found] = row[at[found]];
        }
    }
#else
    for (int64_t j = 0; j < width; j++)
        if (row[j] <= tau) cand[found] = row[j], at[found++] = (int32_t)j;
#endif
    while (found > 0 && base + at[found - 1] >= m) found--; /* padding: the last columns */
    if (*len + found <= MERGE_MOST && base + width <= INT32_MAX)
        merge_ranked(keys, idx, k, len, cand, at, base, found);
    else
        for (int64_t c = 0; c < found; c++) keep(keys, idx, k, len, cand[c], base + at[c]);
}

/* q: (n, d), row stride ldq; packed, psq: from cnn2gnn_nearest_pack over m anchors; 1 <= k <= m.
 * out_d, out_i: (n, k), squared distances ascending and their anchors. Returns 0, or 1 when out of memory. */
int cnn2gnn_nearest(const float *q, int64_t ldq, const float *packed, const float *psq, int64_t n, int64_t m,
                    int64_t d, int64_t k, float *out_d, int64_t *out_i, int threads) {
    int64_t mp = cnn2gnn_nearest_padded(m), tiles = (n + R - 1) / R;
    threads = team(threads, tiles, 4); /* at least 4 tiles (16 queries) a thread */
    /* the bank is read in chunks of about CHUNK floats (they stay in L2) by a group of up to GROUP tiles in turn, so a
     * large bank is streamed from memory once per group rather than once per tile */
    int64_t chunk = CHUNK / (d * 2 * L) * 2 * L;
    chunk = chunk < 2 * L ? 2 * L : chunk > mp ? mp : chunk;
    int64_t per = (tiles + threads - 1) / threads, group = per < GROUP ? per : GROUP;
    int64_t groups = (tiles + group - 1) / group;
    int64_t rows = group * R;
    size_t each = (size_t)(R * chunk + 2 * chunk + rows * k + k) * sizeof(int32_t) +
                  (size_t)(rows * k + k + rows) * sizeof(int64_t) + (size_t)rows * sizeof(float);
    char *mem = scratch(&each, threads);
    if (!mem) return 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t g = 0; g < groups; g++) {
        char *mine = thread_scratch(mem, each);
        int64_t *idx = (int64_t *)mine, *ti = idx + rows * k, *len = ti + k;
        float *qsq = (float *)(len + rows);
        int32_t *keys = (int32_t *)(qsq + rows), *tk = keys + rows * k, *buf = tk + k, *cand = buf + R * chunk;
        int64_t first = g * group * R, count = (g + 1) * group * R < n ? group * R : n - first;
        for (int64_t r = 0; r < count; r++) {
            const float *row = q + (first + r) * ldq;
            float sum = 0.0f;
            for (int64_t e = 0; e < d; e++) sum += row[e] * row[e];
            qsq[r] = sum;
            len[r] = 0;
        }
        for (int64_t base = 0; base < mp; base += chunk) {
            int64_t width = mp - base < chunk ? mp - base : chunk;
            for (int64_t t = 0; t < count; t += R) {
                const float *tile[R];
                float tile_sq[R];
                for (int r = 0; r < R; r++) { /* a last tile of fewer queries repeats its last one */
                    int64_t at = t + r < count ? t + r : count - 1;
                    tile[r] = q + (first + at) * ldq;
                    tile_sq[r] = qsq[at];
                }
                distances(tile, tile_sq, packed + base * d, psq + base, width, d, buf);
                for (int r = 0; r < R && t + r < count; r++)
                    select_chunk(buf + r * width, base, m, width, k, keys + (t + r) * k, idx + (t + r) * k,
                                 &len[t + r], tk, ti, cand);
            }
        }
        for (int64_t r = 0; r < count; r++)
            for (int64_t l = 0; l < k; l++) {
                float v;
                memcpy(&v, &keys[r * k + l], sizeof v); /* a key is the distance's bits (NaN: 0x7fffffff, a NaN) */
                out_d[(first + r) * k + l] = v;
                out_i[(first + r) * k + l] = idx[r * k + l];
            }
    }
    free(mem);
    return 0;
}
