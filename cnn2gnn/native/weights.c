/* The closed-form adaptive-neighbours weights of each row of candidate distances (docs/method.md section 2): what
 * cnn2gnn.graph.sparse_neighbours computes, in one pass instead of a dozen small torch operators; and the weighted
 * sums of the neighbours' messages they define, what the anchors policy's fast path (cnn2gnn/models/fastpath.py)
 * propagates, with the next layer computed from them in the same pass where it asks for it (cnn2gnn/native/__init__.py
 * builds and loads this file).
 *
 * Row i's K candidate distances, sorted ascending d_(1) <= ... <= d_(k+1) <= ... (ties to the lower column):
 *
 *     gap_l = max(0, d_(k+1) - d_(l)),  l = 1..k;   s = sum_l gap_l;   p_l = gap_l / s  (1/k when s <= eps)
 *
 * written with their columns, nearest first. NaN sorts last, as in torch.topk. k + 1 <= K <= 64.
 */
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "vectors.h"

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

/* o = bias + sum_l a_l rows_l over `width` columns, each column summed nearest first (then the bias): CHUNK columns
 * at a time in vector registers, so each neighbour's row is read once and the output written once */
#define CHUNK (4 * L)
static void weighted_sum(const float *const *rows, const float *a, int64_t k, int64_t width, const float *bias,
                         float *o) {
    int64_t t = 0;
    for (; t + CHUNK <= width; t += CHUNK) {
        vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        for (int64_t l = 0; l < k; l++) {
            const float *r = rows[l] + t;
            const vf al = splat(a[l]);
            s0 += al * load_f(r);
            s1 += al * load_f(r + L);
            s2 += al * load_f(r + 2 * L);
            s3 += al * load_f(r + 3 * L);
        }
        if (bias) {
            s0 += load_f(bias + t);
            s1 += load_f(bias + t + L);
            s2 += load_f(bias + t + 2 * L);
            s3 += load_f(bias + t + 3 * L);
        }
        memcpy(o + t, &s0, sizeof s0);
        memcpy(o + t + L, &s1, sizeof s1);
        memcpy(o + t + 2 * L, &s2, sizeof s2);
        memcpy(o + t + 3 * L, &s3, sizeof s3);
    }
    for (; t < width; t++) {
        float s = 0.0f;
        for (int64_t l = 0; l < k; l++) s += a[l] * rows[l][t];
        o[t] = bias ? s + bias[t] : s;
    }
}

/* a second layer from the activations of TILE rows at once: out_i[r] = o_i[nh + r] + head_r . o_i[0..nh) for the c
 * rows of head (c, nh) and the `rows` (<= TILE) rows o_i (stride ldo), TILE rows by 4 classes at a time in vector
 * registers, so that each load of head serves TILE rows and each load of o four classes; each sum is taken lane-wise
 * in column order, then across the lanes: the same for a row whatever the other rows of its tile */
#define TILE 4
static void head_tile(const float *o, int64_t ldo, int64_t rows, const float *head, int64_t nh, int64_t c, float *out,
                      int64_t ldout) {
    const float *op[TILE];
    for (int i = 0; i < TILE; i++) op[i] = o + (i < rows ? i : rows - 1) * ldo; /* past the last row: repeat it */
    for (int64_t r = 0; r < c; r += 4) {
        const float *hr[4];
        for (int j = 0; j < 4; j++) hr[j] = head + (r + j < c ? r + j : c - 1) * nh; /* past c: repeat */
        vf acc[TILE][4];
        for (int i = 0; i < TILE; i++)
            for (int j = 0; j < 4; j++) acc[i][j] = splat(0.0f);
        int64_t t = 0;
        for (; t + L <= nh; t += L) {
            vf x[TILE];
            for (int i = 0; i < TILE; i++) x[i] = load_f(op[i] + t);
            for (int j = 0; j < 4; j++) {
                const vf h = load_f(hr[j] + t);
                for (int i = 0; i < TILE; i++) acc[i][j] += h * x[i];
            }
        }
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < 4 && r + j < c; j++) {
                float sum = hsum(acc[i][j]);
                for (int64_t u = t; u < nh; u++) sum += hr[j][u] * op[i][u];
                out[i * ldout + r + j] = op[i][nh + r + j] + sum;
            }
    }
}

/* out_i = sum_l p_il messages[positions[i, c_il]] (+ bias) (+ base_i on the first nbase columns), the p_il and c_il
 * of row i's K candidate distances as above: one row of `width` floats per query, summed nearest first, then the
 * bias, then base (row stride ldb); the first nrelu columns then go through max(0, .) (NaN kept, as torch.relu).
 * With a head (c rows of nh floats, c = width - nh: a second layer's weight), the rows stay in this thread's scratch
 * and out_i is the c floats o_i[nh + r] + head_r . o_i[0..nh) instead (head_tile: a layer's output computed from the
 * activations while they are in cache, which are never written). Rows are shared among OpenMP threads, TILE at a
 * time. Returns the number of rows that named a position outside [0, m) (their outputs are left at zero), or -1
 * when out of memory. */
int64_t cnn2gnn_propagate(const float *dist, const int64_t *positions, int64_t n, int64_t K, int64_t k, double eps,
                          const float *messages, int64_t m, int64_t width, const float *bias, const float *base,
                          int64_t ldb, int64_t nbase, int64_t nrelu, const float *head, int64_t nh, float *out,
                          int threads) {
    int64_t bad = 0, wout = head ? width - nh : width, tiles = (n + TILE - 1) / TILE;
    int team_size = team(threads, tiles, 32 / TILE);
    size_t each = head ? (size_t)(TILE * width) * sizeof(float) : 0;
    char *mem = head ? scratch(&each, team_size) : NULL;
    if (head && !mem) return -1;
    (void)threads; /* unused without OpenMP */
#pragma omp parallel for num_threads(team_size) schedule(static) reduction(+ : bad)
    for (int64_t g = 0; g < tiles; g++) {
        int64_t first = g * TILE, rows = n - first < TILE ? n - first : TILE, outside[TILE] = {0};
        float *tile = head ? (float *)thread_scratch(mem, each) : NULL;
        for (int64_t i = first; i < first + rows; i++) {
            float w[64];
            int64_t c[64];
            const float *rows_of[64];
            row_weights(dist + i * K, K, k, eps, w, c);
            float *o = head ? tile + (i - first) * width : out + i * width;
            for (int64_t l = 0; l < k; l++) {
                const int64_t j = positions[i * K + c[l]];
                if (j < 0 || j >= m)
                    outside[i - first] = 1;
                else
                    rows_of[l] = messages + j * width; /* a pointer only into the table */
            }
            if (outside[i - first]) {
                memset(o, 0, (size_t)width * sizeof(float));
                bad++;
                continue;
            }
            weighted_sum(rows_of, w, k, width, bias, o);
            if (base)
                for (int64_t t = 0; t < nbase; t++) o[t] += base[i * ldb + t];
            for (int64_t t = 0; t < nrelu; t++) o[t] = o[t] < 0.0f ? 0.0f : o[t];
        }
        if (head) {
            head_tile(tile, width, rows, head, nh, wout, out + first * wout, wout);
            for (int64_t i = 0; i < rows; i++)
                if (outside[i]) memset(out + (first + i) * wout, 0, (size_t)wout * sizeof(float));
        }
    }
    free(mem);
    return bad;
}
