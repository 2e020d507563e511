// Overlap-save tiling for the FFT kernel, NCHW: gather zero-padded input
// tiles before the batched real FFT, and keep every stride-th valid
// correlation value (+ bias) after the inverse one. Same tiling and layouts
// as the CPU kernel (kernels/cpu/fft.py: gather_tiles, scatter_outputs), whose
// plan (FFT lengths, outputs per tile, tiles per batch) the GPU kernel shares.
// Tiles and correlation outputs are in the workspace type Wt (float32 for
// float16 data). One thread per element written.

template <typename T, typename Wt>
__device__ void fft_gather_tiles(const T* __restrict__ x, Wt* __restrict__ tiles, int nb,
                                 int C, int H, int W, long long t0, int tile_rows,
                                 int tile_cols, int lh, int lw, int step_h, int step_w, int pt,
                                 int pl) {
    const long long total = (long long)nb * C * lh * lw;
    CB_GRID_STRIDE_LOOP(i, total) {
        long long rest = i / lw;
        const int e = (int)(i - rest * lw);
        const int a = (int)(rest % lh);
        rest /= lh;
        const int c = (int)(rest % C);
        const TilePos tp = cb_tile_position(t0 + rest / C, tile_rows, tile_cols);
        const int n = tp.n;
        const int row = tp.ti * step_h - pt + a, col = tp.tj * step_w - pl + e;
        Wt v = Wt(0);
        if (row >= 0 && row < H && col >= 0 && col < W)
            v = (Wt)cb_load(x, (((long long)n * C + c) * H + row) * W + col);
        tiles[i] = v;
    }
}

template <typename T, typename Wt>
__device__ void fft_scatter_outputs(const Wt* __restrict__ out, const T* __restrict__ bias,
                                    T* __restrict__ y, int nb, int K, int P, int Q,
                                    long long t0, int tile_rows, int tile_cols, int lh, int lw,
                                    int th, int tw, int sh, int sw, int has_bias) {
    const long long total = (long long)nb * K * th * tw;
    CB_GRID_STRIDE_LOOP(i, total) {
        long long rest = i / tw;
        const int e = (int)(i - rest * tw);
        const int a = (int)(rest % th);
        rest /= th;
        const int k = (int)(rest % K);
        const long long bt = rest / K;  // tile within this batch
        const TilePos tp = cb_tile_position(t0 + bt, tile_rows, tile_cols);
        const int n = tp.n, ti = tp.ti, tj = tp.tj;
        const int p = ti * th + a, q = tj * tw + e;
        if (p >= P || q >= Q) continue;
        Wt v = out[((bt * K + k) * lh + (long long)a * sh) * lw + (long long)e * sw];
        if (has_bias) v += (Wt)cb_load(bias, k);
        cb_store(y, (((long long)n * K + k) * P + p) * Q + q, v);
    }
}

#define DEFINE_FFT(SUFFIX, T, Wt)                                                             \
    extern "C" __global__ void fft_gather_tiles_##SUFFIX(                                     \
        const T* x, Wt* tiles, int nb, int C, int H, int W, long long t0, int tile_rows,      \
        int tile_cols, int lh, int lw, int step_h, int step_w, int pt, int pl) {              \
        fft_gather_tiles<T, Wt>(x, tiles, nb, C, H, W, t0, tile_rows, tile_cols, lh, lw,      \
                                step_h, step_w, pt, pl);                                      \
    }                                                                                         \
    CB_EXPORT(fft_gather_tiles_##SUFFIX)                                                      \
    extern "C" __global__ void fft_scatter_outputs_##SUFFIX(                                  \
        const Wt* out, const T* bias, T* y, int nb, int K, int P, int Q, long long t0,        \
        int tile_rows, int tile_cols, int lh, int lw, int th, int tw, int sh, int sw,         \
        int has_bias) {                                                                       \
        fft_scatter_outputs<T, Wt>(out, bias, y, nb, K, P, Q, t0, tile_rows, tile_cols, lh,   \
                                   lw, th, tw, sh, sw, has_bias);                             \
    }                                                                                         \
    CB_EXPORT(fft_scatter_outputs_##SUFFIX)

DEFINE_FFT(f32, float, float)
DEFINE_FFT(f64, double, double)
DEFINE_FFT(f16, cb_half, float)
