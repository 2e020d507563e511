// Winograd F(m x m, 3x3) transforms for any interpolation points, NCHW.
//
// The matrices come in as arguments (B^T alpha x alpha, A^T m x alpha, row
// major, in the transforms' dtype), built on the host from the points
// (kernels/algorithms/winograd.py: cook_toom) and rounded once. Input
// transform V = B^T d B for every alpha x alpha input tile d, output
// transform Y = A^T M A (+ bias) for every m x m output tile; between them
// the host runs the alpha^2 GEMMs M[xi,nu] = U[xi,nu] @ V[xi,nu] as one
// batched cuBLAS call. Layouts are the CPU kernel's
// (kernels/cpu/winograd_tiles.py): V is (alpha^2, C, T), M is (alpha^2, K, T)
// with tile t = (b*tile_rows + i)*tile_cols + j, and a zero coefficient is
// skipped as there. Wt is the transforms' type and Vt the stored V: float32
// for float16 data (these tiles' growth factors are too large for fp16 operands).
// One thread per (image, channel, tile); alpha <= WINOGRAD_TILES_MAX_ALPHA.

template <typename T, typename Wt, typename Vt>
__device__ void winograd_tiles_input(const T* __restrict__ x, Vt* __restrict__ v,
                                     const Wt* __restrict__ bt, int m, int alpha, int C, int H,
                                     int W, int n0, int nb, int tr0, int tile_rows,
                                     int tile_cols, int pt, int pl) {
    const long long tiles = (long long)nb * tile_rows * tile_cols;
    const long long total = tiles * C;
    const long long stride = (long long)C * tiles;  // between (xi, nu) planes
    CB_GRID_STRIDE_LOOP(i, total) {
        const int c = (int)(i / tiles);
        const long long t = i - (long long)c * tiles;
        const TilePos tp = cb_tile_position(t, tile_rows, tile_cols);
        const int row0 = (tr0 + tp.ti) * m - pt, col0 = tp.tj * m - pl;
        const long long plane = ((long long)(n0 + tp.n) * C + c) * H;
        Wt d[WINOGRAD_TILES_MAX_ALPHA][WINOGRAD_TILES_MAX_ALPHA];
        for (int a = 0; a < alpha; ++a) {
            const int row = row0 + a;
            for (int e = 0; e < alpha; ++e) {
                const int col = col0 + e;
                d[a][e] = (row >= 0 && row < H && col >= 0 && col < W)
                              ? (Wt)cb_load(x, (plane + row) * W + col)
                              : Wt(0);
            }
        }
        Wt btd[WINOGRAD_TILES_MAX_ALPHA][WINOGRAD_TILES_MAX_ALPHA];
        for (int xi = 0; xi < alpha; ++xi) {  // B^T d: rows
            for (int e = 0; e < alpha; ++e) {
                Wt acc = Wt(0);
                for (int a = 0; a < alpha; ++a) {
                    const Wt coef = bt[xi * alpha + a];
                    if (coef != Wt(0)) acc += coef * d[a][e];
                }
                btd[xi][e] = acc;
            }
        }
        const long long base = (long long)c * tiles + t;
        for (int xi = 0; xi < alpha; ++xi) {  // (B^T d) B: columns
            for (int nu = 0; nu < alpha; ++nu) {
                Wt acc = Wt(0);
                for (int e = 0; e < alpha; ++e) {
                    const Wt coef = bt[nu * alpha + e];
                    if (coef != Wt(0)) acc += coef * btd[xi][e];
                }
                cb_store(v, (long long)(xi * alpha + nu) * stride + base, acc);
            }
        }
    }
}

template <typename T, typename Wt>
__device__ void winograd_tiles_output(const Wt* __restrict__ mm, const Wt* __restrict__ at,
                                      const T* __restrict__ bias, T* __restrict__ y, int m,
                                      int alpha, int K, int P, int Q, int n0, int nb, int tr0,
                                      int tile_rows, int tile_cols, int has_bias) {
    const long long tiles = (long long)nb * tile_rows * tile_cols;
    const long long total = tiles * K;
    const long long stride = (long long)K * tiles;
    CB_GRID_STRIDE_LOOP(i, total) {
        const int k = (int)(i / tiles);
        const long long t = i - (long long)k * tiles;
        const TilePos tp = cb_tile_position(t, tile_rows, tile_cols);
        Wt s[WINOGRAD_TILES_MAX_ALPHA - 2][WINOGRAD_TILES_MAX_ALPHA];
        for (int p = 0; p < m; ++p) {  // A^T M: alpha rows -> m rows
            for (int nu = 0; nu < alpha; ++nu) {
                Wt acc = Wt(0);
                for (int xi = 0; xi < alpha; ++xi) {
                    const Wt coef = at[p * alpha + xi];
                    if (coef != Wt(0))
                        acc += coef * mm[(long long)(xi * alpha + nu) * stride +
                                         (long long)k * tiles + t];
                }
                s[p][nu] = acc;
            }
        }
        const Wt bk = has_bias ? (Wt)cb_load(bias, k) : Wt(0);
        const int p0 = (tr0 + tp.ti) * m, q0 = tp.tj * m;
        const long long out = (((long long)(n0 + tp.n) * K + k) * P + p0) * Q + q0;
        for (int p = 0; p < m && p0 + p < P; ++p) {  // (A^T M) A, outputs that exist
            for (int q = 0; q < m && q0 + q < Q; ++q) {
                Wt acc = Wt(0);
                for (int nu = 0; nu < alpha; ++nu) {
                    const Wt coef = at[q * alpha + nu];
                    if (coef != Wt(0)) acc += coef * s[p][nu];
                }
                cb_store(y, out + (long long)p * Q + q, acc + bk);
            }
        }
    }
}

#define DEFINE_WINOGRAD_TILES(SUFFIX, T, Wt, Vt)                                              \
    extern "C" __global__ void winograd_tiles_input_##SUFFIX(                                 \
        const T* x, Vt* v, const Wt* bt, int m, int alpha, int C, int H, int W, int n0,       \
        int nb, int tr0, int tile_rows, int tile_cols, int pt, int pl) {                      \
        winograd_tiles_input<T, Wt, Vt>(x, v, bt, m, alpha, C, H, W, n0, nb, tr0, tile_rows,  \
                                        tile_cols, pt, pl);                                   \
    }                                                                                         \
    CB_EXPORT(winograd_tiles_input_##SUFFIX)                                                  \
    extern "C" __global__ void winograd_tiles_output_##SUFFIX(                                \
        const Wt* mm, const Wt* at, const T* bias, T* y, int m, int alpha, int K, int P,      \
        int Q, int n0, int nb, int tr0, int tile_rows, int tile_cols, int has_bias) {         \
        winograd_tiles_output<T, Wt>(mm, at, bias, y, m, alpha, K, P, Q, n0, nb, tr0,         \
                                     tile_rows, tile_cols, has_bias);                         \
    }                                                                                         \
    CB_EXPORT(winograd_tiles_output_##SUFFIX)

DEFINE_WINOGRAD_TILES(f32, float, float, float)
DEFINE_WINOGRAD_TILES(f64, double, double, double)
DEFINE_WINOGRAD_TILES(f16, cb_half, float, float)
