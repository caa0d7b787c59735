/* The closed-form adaptive-neighbours weights of each row of candidate distances (docs/method.md section 2): what
 * cnn2gnn.graph.sparse_neighbours computes, in one pass instead of a dozen small torch operators
 * (cnn2gnn/native/__init__.py builds and loads this file).
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

void cnn2gnn_adaptive_weights(const float *dist, int64_t n, int64_t K, int64_t k, double eps, float *weight,
                              int64_t *col) {
    float d[65];
    int64_t c[65];
    for (int64_t i = 0; i < n; i++) {
        const float *row = dist + i * K;
        int64_t len = 0;
        for (int64_t j = 0; j < K; j++) { /* keep the k + 1 smallest, in order */
            if (len == k + 1 && !before(row[j], j, d[k], c[k])) continue;
            int64_t p = len < k + 1 ? len++ : k;
            while (p > 0 && before(row[j], j, d[p - 1], c[p - 1])) {
                d[p] = d[p - 1];
                c[p] = c[p - 1];
                p--;
            }
            d[p] = row[j];
            c[p] = j;
        }
        float sum = 0.0f;
        float *w = weight + i * k;
        for (int64_t l = 0; l < k; l++) {
            float gap = d[k] - d[l];
            w[l] = gap < 0.0f ? 0.0f : gap; /* a NaN gap stays NaN, as in torch's clamp_min */
            sum += w[l];
            col[i * k + l] = c[l];
        }
        if (sum > eps)
            for (int64_t l = 0; l < k; l++) w[l] /= sum;
        else
            for (int64_t l = 0; l < k; l++) w[l] = 1.0f / (float)k;
    }
}
