/* The closed-form adaptive-neighbours weights of each row of candidate distances (docs/method.md section 2): what
 * cnn2gnn.graph.sparse_neighbours computes, in one pass instead of a dozen small torch operators; and the weighted
 * sums of the neighbours' messages they define, what the anchors policy's fast path (cnn2gnn/models/fastpath.py)
 * propagates (cnn2gnn/native/__init__.py builds and loads this file).
 *
 * Row i's K candidate distances, sorted ascending d_(1) <= ... <= d_(k+1) <= ... (ties to the lower column):
 *
 *     gap_l = max(0, d_(k+1) - d_(l)),  l = 1..k;   s = sum_l gap_l;   p_l = gap_l / s  (1/k when s <= eps)
 *
 * written with their columns, nearest first. NaN sorts last, as in torch.topk. k + 1 <= K <= 64.
 */
#include <stdint.h>
#include <string.h>

static inline int before(float a, int64_t ia, float b, int64_t ib) { /* a sorts before b: NaN last, ties by column */
    if (a != a) return 0;
    if (b != b) return 1;
    return a < b || (a == b && ia < ib);
}

/* one row's k weights w and their columns c, from its K candidate distances */
static void row_weights(const float *row, int64_t K, int64_t k, double eps, float *w, int64_t *c) {
    float d[65];
    int64_t col[65];
    int64_t len = 0;
    for (int64_t j = 0; j < K; j++) { /* keep the k + 1 smallest, in order */
        if (len == k + 1 && !before(row[j], j, d[k], col[k])) continue;
        int64_t p = len < k + 1 ? len++ : k;
        while (p > 0 && before(row[j], j, d[p - 1], col[p - 1])) {
            d[p] = d[p - 1];
            col[p] = col[p - 1];
            p--;
        }
        d[p] = row[j];
        col[p] = j;
    }
    float sum = 0.0f;
    for (int64_t l = 0; l < k; l++) {
        float gap = d[k] - d[l];
        w[l] = gap < 0.0f ? 0.0f : gap; /* a NaN gap stays NaN, as in torch's clamp_min */
        sum += w[l];
        c[l] = col[l];
    }
    if (sum > eps)
        for (int64_t l = 0; l < k; l++) w[l] /= sum;
    else
        for (int64_t l = 0; l < k; l++) w[l] = 1.0f / (float)k;
}

void cnn2gnn_adaptive_weights(const float *dist, int64_t n, int64_t K, int64_t k, double eps, float *weight,
                              int64_t *col) {
    for (int64_t i = 0; i < n; i++) row_weights(dist + i * K, K, k, eps, weight + i * k, col + i * k);
}

/* out_i = sum_l p_il messages[positions[i, c_il]] (+ bias), the p_il and c_il of row i's K candidate distances as
 * above: one row of `width` floats per query, summed nearest first; rows shared among OpenMP threads. Returns the
 * number of rows that named a position outside [0, m) (their sums are left at zero). */
int64_t cnn2gnn_propagate(const float *dist, const int64_t *positions, int64_t n, int64_t K, int64_t k, double eps,
                          const float *messages, int64_t m, int64_t width, const float *bias, float *out,
                          int threads) {
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n >= 32) reduction(+ : bad)
    for (int64_t i = 0; i < n; i++) {
        float w[64];
        int64_t c[64];
        row_weights(dist + i * K, K, k, eps, w, c);
        float *o = out + i * width;
        memset(o, 0, (size_t)width * sizeof(float));
        int64_t outside = 0;
        for (int64_t l = 0; l < k; l++) outside += positions[i * K + c[l]] < 0 || positions[i * K + c[l]] >= m;
        if (outside) {
            bad++;
            continue;
        }
        for (int64_t l = 0; l < k; l++) {
            const float *row = messages + positions[i * K + c[l]] * width;
            const float a = w[l];
            for (int64_t t = 0; t < width; t++) o[t] += a * row[t];
        }
        if (bias)
            for (int64_t t = 0; t < width; t++) o[t] += bias[t];
    }
    return bad;
}
