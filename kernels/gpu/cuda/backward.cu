// Backward passes, NCHW / KCRS: the gradients of the input (bwd_d) and of the
// weights (bwd_w) that the GPU kernels compute with these kernels and cuBLAS,
// as kernels/gpu/backward.py describes. No kernel scatters with atomics: each
// thread owns the values it writes, so results are deterministic.
//
// * direct_bwd_data: one thread per input pixel gathers the taps that reach it,
//     dx[n, c, i, j] = sum_(k in c's group) sum_(r, s) dy[n, k, p, q] w[k, c', r, s]
//   over p = (i + pt - r*dh) / sh and q = (j + pl - s*dw) / sw where those
//   divide exactly and lie in the output: stride-aware index ranges.
// * direct_bwd_weights_partial / _reduce: each thread sums one weight's
//   products over one chunk of images, then one thread per weight adds the
//   chunks in order (two passes instead of a scatter).
// * col2im: dx from the lowered gradient col = W^T dY of one tile of output
//   rows (layout of im2col_lower); a tile after the first adds to dx.
// * winograd_grad_tiles: U = G' dy G'^T of F(3x3,2x2) per 2x2 gradient tile,
//   G' rows (1,0), (1,1), (1,-1), (0,-1); zero past dy's last row or column.
// Acc is the accumulation type (float32 for float16 data).

template <typename T>
__device__ void direct_bwd_data(const T* __restrict__ dy, const T* __restrict__ w,
                                T* __restrict__ dx, int N, int C, int H, int W, int K, int R,
                                int S, int P, int Q, int sh, int sw, int pt, int pl, int dh,
                                int dw, int groups) {
    typedef typename Acc<T>::type A;
    const int cg = C / groups, kg = K / groups;
    const long long total = (long long)N * C * H * W;
    CB_GRID_STRIDE_LOOP(idx, total) {
        long long t = idx;
        const int j = (int)(t % W);
        t /= W;
        const int i = (int)(t % H);
        t /= H;
        const int c = (int)(t % C);
        const int n = (int)(t / C);
        const int g = c / cg, cl = c - g * cg;
        A acc = A(0);
        for (int kk = 0; kk < kg; ++kk) {
            const int k = g * kg + kk;
            const long long dy_plane = ((long long)n * K + k) * P;
            const long long w_base = ((long long)k * cg + cl) * R;
            for (int r = 0; r < R; ++r) {
                const int tp = i + pt - r * dh;
                if (tp < 0) break;  // larger r only moves further up
                if (tp % sh) continue;
                const int p = tp / sh;
                if (p >= P) continue;
                for (int s = 0; s < S; ++s) {
                    const int tq = j + pl - s * dw;
                    if (tq < 0) break;
                    if (tq % sw) continue;
                    const int q = tq / sw;
                    if (q >= Q) continue;
                    acc = cb_fma((A)cb_load(dy, (dy_plane + p) * Q + q),
                                 (A)cb_load(w, (w_base + r) * S + s), acc);
                }
            }
        }
        cb_store(dx, idx, acc);
    }
}

template <typename T>
__device__ void direct_bwd_weights_partial(const T* __restrict__ x, const T* __restrict__ dy,
                                           typename Acc<T>::type* __restrict__ partial, int N,
                                           int C, int H, int W, int K, int R, int S, int P,
                                           int Q, int sh, int sw, int pt, int pl, int dh,
                                           int dw, int groups, int chunk) {
    typedef typename Acc<T>::type A;
    const int cg = C / groups, kg = K / groups;
    const long long weights = (long long)K * cg * R * S;
    const int chunks = (N + chunk - 1) / chunk;
    const long long total = weights * chunks;
    CB_GRID_STRIDE_LOOP(idx, total) {
        const int part = (int)(idx / weights);
        long long t = idx - (long long)part * weights;
        const int s = (int)(t % S);
        t /= S;
        const int r = (int)(t % R);
        t /= R;
        const int cl = (int)(t % cg);
        const int k = (int)(t / cg);
        const int c = (k / kg) * cg + cl;
        // Output rows and columns whose window reaches the image at this tap.
        const int p_lo = cb_imin(P, (pt - r * dh + sh - 1 > 0) ? (pt - r * dh + sh - 1) / sh : 0);
        const int q_lo = cb_imin(Q, (pl - s * dw + sw - 1 > 0) ? (pl - s * dw + sw - 1) / sw : 0);
        A acc = A(0);
        const int n_end = cb_imin(N, (part + 1) * chunk);
        for (int n = part * chunk; n < n_end; ++n) {
            const long long x_plane = ((long long)n * C + c) * H;
            const long long dy_plane = ((long long)n * K + k) * P;
            for (int p = p_lo; p < P; ++p) {
                const int iy = p * sh + r * dh - pt;
                if (iy >= H) break;
                for (int q = q_lo; q < Q; ++q) {
                    const int ix = q * sw + s * dw - pl;
                    if (ix >= W) break;
                    acc = cb_fma((A)cb_load(dy, (dy_plane + p) * Q + q),
                                 (A)cb_load(x, (x_plane + iy) * W + ix), acc);
                }
            }
        }
        partial[idx] = acc;
    }
}

template <typename T>
__device__ void direct_bwd_weights_reduce(const typename Acc<T>::type* __restrict__ partial,
                                          T* __restrict__ dwt, long long weights, int chunks) {
    typedef typename Acc<T>::type A;
    CB_GRID_STRIDE_LOOP(idx, weights) {
        A acc = A(0);
        for (int part = 0; part < chunks; ++part) acc += partial[(long long)part * weights + idx];
        cb_store(dwt, idx, acc);
    }
}

template <typename T>
__device__ void col2im(const typename Acc<T>::type* __restrict__ col, T* __restrict__ dx,
                       int nb, int C, int H, int W, int n0, int p0, int rows, int R, int S,
                       int sh, int sw, int pt, int pl, int dh, int dw, int Q, int accumulate) {
    typedef typename Acc<T>::type A;
    const long long total = (long long)nb * C * H * W;
    const long long row_length = (long long)rows * Q;
    CB_GRID_STRIDE_LOOP(idx, total) {
        long long t = idx;
        const int j = (int)(t % W);
        t /= W;
        const int i = (int)(t % H);
        t /= H;
        const int c = (int)(t % C);
        const int b = (int)(t / C);
        const long long out = (((long long)(n0 + b) * C + c) * H + i) * W + j;
        A acc = accumulate ? (A)cb_load(dx, out) : A(0);
        for (int r = 0; r < R; ++r) {
            const int tp = i + pt - r * dh;
            if (tp < 0) break;
            if (tp % sh) continue;
            const int pp = tp / sh - p0;
            if (pp < 0 || pp >= rows) continue;
            for (int s = 0; s < S; ++s) {
                const int tq = j + pl - s * dw;
                if (tq < 0) break;
                if (tq % sw) continue;
                const int q = tq / sw;
                if (q >= Q) continue;
                acc += col[(((long long)b * C + c) * R * S + r * S + s) * row_length +
                           (long long)pp * Q + q];
            }
        }
        cb_store(dx, out, acc);
    }
}

template <typename T, typename Wt, typename Vt>
__device__ void winograd_grad_tiles(const T* __restrict__ dy, Vt* __restrict__ u, int K, int P,
                                    int Q, int n0, int nb, int tr0, int tile_rows,
                                    int tile_cols) {
    const long long tiles = (long long)nb * tile_rows * tile_cols;
    const long long total = tiles * K;
    const long long stride = (long long)K * tiles;  // between (xi, nu) planes
    CB_GRID_STRIDE_LOOP(i, total) {
        const int k = (int)(i / tiles);
        const long long t = i - (long long)k * tiles;
        const TilePos tp = cb_tile_position(t, tile_rows, tile_cols);
        const int row0 = (tr0 + tp.ti) * 2, col0 = tp.tj * 2;
        const long long plane = ((long long)(n0 + tp.n) * K + k) * P;
        Wt d[2][2];
        for (int a = 0; a < 2; ++a)
            for (int e = 0; e < 2; ++e)
                d[a][e] = (row0 + a < P && col0 + e < Q)
                              ? (Wt)cb_load(dy, (plane + row0 + a) * Q + col0 + e)
                              : Wt(0);
        Wt g[4][2];  // G' d: rows
        for (int e = 0; e < 2; ++e) {
            g[0][e] = d[0][e];
            g[1][e] = d[0][e] + d[1][e];
            g[2][e] = d[0][e] - d[1][e];
            g[3][e] = -d[1][e];
        }
        const long long base = (long long)k * tiles + t;
        for (int a = 0; a < 4; ++a) {  // (G' d) G'^T: columns
            cb_store(u, (a * 4 + 0) * stride + base, g[a][0]);
            cb_store(u, (a * 4 + 1) * stride + base, g[a][0] + g[a][1]);
            cb_store(u, (a * 4 + 2) * stride + base, g[a][0] - g[a][1]);
            cb_store(u, (a * 4 + 3) * stride + base, -g[a][1]);
        }
    }
}

#define DEFINE_BACKWARD(SUFFIX, T, A, Vt)                                                      \
    extern "C" __global__ void direct_bwd_data_##SUFFIX(                                       \
        const T* dy, const T* w, T* dx, int N, int C, int H, int W, int K, int R, int S,       \
        int P, int Q, int sh, int sw, int pt, int pl, int dh, int dw, int groups) {            \
        direct_bwd_data<T>(dy, w, dx, N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw,       \
                           groups);                                                            \
    }                                                                                          \
    CB_EXPORT(direct_bwd_data_##SUFFIX)                                                        \
    extern "C" __global__ void direct_bwd_weights_partial_##SUFFIX(                            \
        const T* x, const T* dy, A* partial, int N, int C, int H, int W, int K, int R, int S,  \
        int P, int Q, int sh, int sw, int pt, int pl, int dh, int dw, int groups,              \
        int chunk) {                                                                           \
        direct_bwd_weights_partial<T>(x, dy, partial, N, C, H, W, K, R, S, P, Q, sh, sw, pt,   \
                                      pl, dh, dw, groups, chunk);                              \
    }                                                                                          \
    CB_EXPORT(direct_bwd_weights_partial_##SUFFIX)                                             \
    extern "C" __global__ void direct_bwd_weights_reduce_##SUFFIX(                             \
        const A* partial, T* dwt, long long weights, int chunks) {                             \
        direct_bwd_weights_reduce<T>(partial, dwt, weights, chunks);                           \
    }                                                                                          \
    CB_EXPORT(direct_bwd_weights_reduce_##SUFFIX)                                              \
    extern "C" __global__ void col2im_##SUFFIX(                                                \
        const A* col, T* dx, int nb, int C, int H, int W, int n0, int p0, int rows, int R,     \
        int S, int sh, int sw, int pt, int pl, int dh, int dw, int Q, int accumulate) {        \
        col2im<T>(col, dx, nb, C, H, W, n0, p0, rows, R, S, sh, sw, pt, pl, dh, dw, Q,         \
                  accumulate);                                                                 \
    }                                                                                          \
    CB_EXPORT(col2im_##SUFFIX)                                                                 \
    extern "C" __global__ void winograd_grad_tiles_##SUFFIX(                                   \
        const T* dy, Vt* u, int K, int P, int Q, int n0, int nb, int tr0, int tile_rows,       \
        int tile_cols) {                                                                       \
        winograd_grad_tiles<T, A, Vt>(dy, u, K, P, Q, n0, nb, tr0, tile_rows, tile_cols);      \
    }                                                                                          \
    CB_EXPORT(winograd_grad_tiles_##SUFFIX)

DEFINE_BACKWARD(f32, float, float, float)
DEFINE_BACKWARD(f64, double, double, double)
DEFINE_BACKWARD(f16, cb_half, float, cb_half)
