/* Shared by the native kernels (nearest.c, pruned.c, weights.c): the vector width L of this build (16 float lanes
 * with AVX-512, 8 with AVX, 4 otherwise) and GCC vector types of that width, with loads that do not assume
 * alignment. */
#ifndef CNN2GNN_VECTORS_H
#define CNN2GNN_VECTORS_H
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define L 16
#elif defined(__AVX__)
#define L 8
#else
#define L 4
#endif

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

/* the sum of x's L lanes, as a tree of halves (a fixed order) */
static inline float hsum(vf x) {
#if defined(__AVX512F__)
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256((__m512)x), (__m256)_mm512_extractf64x4_pd((__m512d)x, 1));
#elif defined(__AVX__)
    __m256 s8 = (__m256)x;
#endif
#if defined(__AVX512F__) || defined(__AVX__)
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
#else
    return (x[0] + x[2]) + (x[1] + x[3]);
#endif
}

#if defined(__AVX512F__) || defined(__AVX2__)
/* the k-th smallest of the L lanes of x (1 <= k <= L) without branches: lane i counts the lanes <= it (L rotations);
 * the k-th smallest value is the least lane whose count reaches k (a smaller lane has fewer than k lanes <= it) */
static inline int32_t kth_lane(vi x, int64_t k) {
    vi count = splat_i(0), iota;
    for (int l = 0; l < L; l++) iota[l] = l;
    for (int r = 0; r < L; r++) {
        vi at = (iota + r) & (L - 1), turned;
#if defined(__AVX512F__)
        __m512i v = _mm512_permutexvar_epi32((__m512i)at, (__m512i)x);
#else
        __m256i v = _mm256_permutevar8x32_epi32((__m256i)x, (__m256i)at);
#endif
        memcpy(&turned, &v, sizeof turned);
        count -= turned <= x; /* a true comparison is -1 */
    }
    vi reached = count >= splat_i((int32_t)k);
    vi least = (x & reached) | (splat_i(INT32_MAX) & ~reached);
    int32_t out = INT32_MAX;
    for (int l = 0; l < L; l++) out = least[l] < out ? least[l] : out;
    return out;
}
#endif

#endif
