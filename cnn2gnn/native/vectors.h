/* Shared by the native kernels (nearest.c, pruned.c, weights.c): the vector width L of this build (16 float lanes
 * with AVX-512, 8 with AVX, 4 otherwise) and GCC vector types of that width, with loads that do not assume
 * alignment. */
#ifndef CNN2GNN_VECTORS_H
#define CNN2GNN_VECTORS_H
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
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

#endif
