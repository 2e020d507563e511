// Winograd F(2x2,3x3) transforms (Lavin & Gray, 2016), NCHW.
//
// Input transform V = B^T d B for every 4x4 input tile d, output transform
// Y = A^T M A (+ bias) for every 2x2 output tile; between them the host runs
// the 16 GEMMs M[xi,nu] = U[xi,nu] @ V[xi,nu] as one batched cuBLAS call.
// Layouts and arithmetic are the CPU kernel's (kernels/cpu/winograd.py),
// operation for operation, so the tests can compare the two bit for bit:
// V is (16, C, T) and M is (16, K, T) with tile t = (b*tile_rows + i)*tile_cols + j.
// The transforms compute in Wt (float32 for float16 data); V is stored as Vt
// and M read as Mt: for float16 data V is float16 (the tensor-core GEMM's
// operand, rounded once from the float32 transform) and M float32 (the GEMM's
// float32 sums). One thread per (image, channel, tile).

template <typename T, typename Wt, typename Vt>
__device__ void winograd_input(const T* __restrict__ x, Vt* __restrict__ v, int C, int H,
                               int W, int n0, int nb, int tr0, int tile_rows, int tile_cols,
                               int pt, int pl) {
    const long long tiles = (long long)nb * tile_rows * tile_cols;
    const long long total = tiles * C;
    CB_GRID_STRIDE_LOOP(i, total) {
        const int c = (int)(i / tiles);
        const long long t = i - (long long)c * tiles;
        const TilePos tp = cb_tile_position(t, tile_rows, tile_cols);
        const int b = tp.n, ti = tp.ti, tj = tp.tj;
        const int row0 = (tr0 + ti) * 2 - pt, col0 = tj * 2 - pl;
        const long long plane = ((long long)(n0 + b) * C + c) * H;
        Wt d[4][4];
        for (int a = 0; a < 4; ++a) {
            const int row = row0 + a;
            for (int e = 0; e < 4; ++e) {
                const int col = col0 + e;
                d[a][e] = (row >= 0 && row < H && col >= 0 && col < W)
                              ? (Wt)cb_load(x, (plane + row) * W + col)
                              : Wt(0);
            }
        }
        // B^T d: rows
        for (int e = 0; e < 4; ++e) {
            const Wt d0 = d[0][e], d1 = d[1][e], d2 = d[2][e], d3 = d[3][e];
            d[0][e] = d0 - d2;
            d[1][e] = d1 + d2;
            d[2][e] = d2 - d1;
            d[3][e] = d1 - d3;
        }
        // (B^T d) B: columns
        const long long stride = (long long)C * tiles;  // between (xi, nu) planes
        const long long base = (long long)c * tiles + t;
        for (int a = 0; a < 4; ++a) {
            const Wt e0 = d[a][0], e1 = d[a][1], e2 = d[a][2], e3 = d[a][3];
            cb_store(v, (a * 4 + 0) * stride + base, e0 - e2);
            cb_store(v, (a * 4 + 1) * stride + base, e1 + e2);
            cb_store(v, (a * 4 + 2) * stride + base, e2 - e1);
            cb_store(v, (a * 4 + 3) * stride + base, e1 - e3);
        }
    }
}

template <typename T, typename Wt>
__device__ void winograd_output(const Wt* __restrict__ m, const T* __restrict__ bias,
                                T* __restrict__ y, int K, int P, int Q, int n0, int nb, int tr0,
                                int tile_rows, int tile_cols, int has_bias) {
    const long long tiles = (long long)nb * tile_rows * tile_cols;
    const long long total = tiles * K;
    const long long stride = (long long)K * tiles;
    CB_GRID_STRIDE_LOOP(i, total) {
        const int k = (int)(i / tiles);
        const long long t = i - (long long)k * tiles;
        const TilePos tp = cb_tile_position(t, tile_rows, tile_cols);
        const int b = tp.n, ti = tp.ti, tj = tp.tj;
        Wt mm[16];
        for (int xn = 0; xn < 16; ++xn) mm[xn] = m[xn * stride + (long long)k * tiles + t];
        // A^T m: 4 rows -> 2 rows, per column
        const Wt s00 = mm[0] + mm[4] + mm[8], s01 = mm[1] + mm[5] + mm[9];
        const Wt s02 = mm[2] + mm[6] + mm[10], s03 = mm[3] + mm[7] + mm[11];
        const Wt s10 = mm[4] - mm[8] - mm[12], s11 = mm[5] - mm[9] - mm[13];
        const Wt s12 = mm[6] - mm[10] - mm[14], s13 = mm[7] - mm[11] - mm[15];
        const Wt bk = has_bias ? (Wt)cb_load(bias, k) : Wt(0);
        const int p = (tr0 + ti) * 2, q = tj * 2;
        const long long out = (((long long)(n0 + b) * K + k) * P + p) * Q + q;
        // (A^T m) A, writing only outputs that exist (odd P or Q)
        cb_store(y, out, s00 + s01 + s02 + bk);
        if (q + 1 < Q) cb_store(y, out + 1, s01 - s02 - s03 + bk);
        if (p + 1 < P) {
            cb_store(y, out + Q, s10 + s11 + s12 + bk);
            if (q + 1 < Q) cb_store(y, out + Q + 1, s11 - s12 - s13 + bk);
        }
    }
}

#define DEFINE_WINOGRAD(SUFFIX, T, Wt, Vt)                                                    \
    extern "C" __global__ void winograd_input_##SUFFIX(                                       \
        const T* x, Vt* v, int C, int H, int W, int n0, int nb, int tr0, int tile_rows,       \
        int tile_cols, int pt, int pl) {                                                      \
        winograd_input<T, Wt, Vt>(x, v, C, H, W, n0, nb, tr0, tile_rows, tile_cols, pt, pl);  \
    }                                                                                         \
    CB_EXPORT(winograd_input_##SUFFIX)                                                        \
    extern "C" __global__ void winograd_output_##SUFFIX(                                      \
        const Wt* m, const T* bias, T* y, int K, int P, int Q, int n0, int nb, int tr0,       \
        int tile_rows, int tile_cols, int has_bias) {                                         \
        winograd_output<T, Wt>(m, bias, y, K, P, Q, n0, nb, tr0, tile_rows, tile_cols,        \
                               has_bias);                                                     \
    }                                                                                         \
    CB_EXPORT(winograd_output_##SUFFIX)

DEFINE_WINOGRAD(f32, float, float, float)
DEFINE_WINOGRAD(f64, double, double, double)
DEFINE_WINOGRAD(f16, cb_half, float, cb_half)
