/* The anchors fast path's search and pass as one call (cnn2gnn/native/prepared.py calls it): the K nearest anchors
 * of each query's graph-space row (cnn2gnn_nearest, nearest.c), then the weighted sums of their messages with the
 * own term, the ReLU and the second layer (cnn2gnn_propagate, weights.c), with the candidates in scratch memory
 * allocated here and every argument that does not change between batches in one struct set once per bank.
 *
 * Python between the kernels costs far more inside a forward than its own time: the kernels leave the interpreter's
 * objects out of cache, and every line between them pays for it (docs/ablations.md s.17). Both kernels keep their
 * own results: the logits are bit for bit those of the two calls in turn.
 */
#include <stdint.h>
#include <stdlib.h>

#include "common.h"

/* what stays fixed for a bank: its packed rows (m of dimension d, from cnn2gnn_nearest_pack) and the K candidates
 * searched; k neighbours weighted with eps; the messages (m, width) side by side, their bias (width); the own term's
 * width nh (also the ReLU's and the head's) and the head (width - nh, nh); where a row's graph-space part starts */
typedef struct {
    const float *packed, *psq;
    int64_t m, d, big, k;
    double eps;
    const float *messages, *bias, *head;
    int64_t width, nh, offset;
} cnn2gnn_anchors_t;

/* both: (n, nh + d), row stride ld, [own term | graph space]; out: (n, width - nh). Returns 0, the number of rows
 * that named a position outside [0, m) (none from the search), or -1 when out of memory. */
int64_t cnn2gnn_anchors(const cnn2gnn_anchors_t *a, const float *both, int64_t ld, int64_t n, float *out,
                        int threads) {
    if (n <= 0) return 0;
    size_t floats = ((size_t)(n * a->big) * sizeof(float) + 63) / 64 * 64;
    char *mem = malloc(floats + (size_t)(n * a->big) * sizeof(int64_t));
    if (!mem) return -1;
    float *dist = (float *)mem;
    int64_t *index = (int64_t *)(mem + floats), bad = -1;
    if (!cnn2gnn_nearest(both + a->offset, ld, a->packed, a->psq, n, a->m, a->d, a->big, dist, index, threads))
        bad = cnn2gnn_propagate(dist, index, n, a->big, a->k, a->eps, a->messages, a->m, a->width, a->bias, both, ld,
                                a->nh, a->nh, a->head, a->nh, out, threads);
    free(mem);
    return bad;
}
