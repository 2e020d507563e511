// Overlap-save tiling for the FFT kernel, NCHW: gather zero-padded input
// tiles before the batched real FFT, and keep every stride-th valid
// correlation value (+ bias) after the inverse one. Same tiling and layouts
// as the CPU kernel (kernels/cpu/fft.py: gather_tiles, scatter_outputs), whose
// plan (FFT lengths, outputs per tile, tiles per batch) the GPU kernel shares.
// Tiles and correlation outputs are in the workspace type Wt (float32 for
// float16 data).
//
// One (tile, channel) plane per blockIdx.y, decoded once; the plane's
// elements across x with 32-bit index arithmetic.

template <typename T, typename Wt>
__device__ void fft_gather_tiles(const T* __restrict__ x, Wt* __restrict__ tiles, int nb,
                                 int C, int H, int W, long long t0, int tile_rows,
                                 int tile_cols, int lh, int lw, int step_h, int step_w, int pt,
                                 int pl) {
    const int plane_size = lh * lw;
    const int n_planes = nb * C;
    for (int plane = blockIdx.y; plane < n_planes; plane += gridDim.y) {
        const int c = plane % C;
        const TilePos tp = cb_tile_position(t0 + plane / C, tile_rows, tile_cols);
        const long long src = ((long long)tp.n * C + c) * H * W;
        const int row0 = tp.ti * step_h - pt, col0 = tp.tj * step_w - pl;
        Wt* dst = tiles + (long long)plane * plane_size;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < plane_size;
             i += gridDim.x * blockDim.x) {
            const int a = i / lw, e = i - a * lw;
            const int row = row0 + a, col = col0 + e;
            Wt v = Wt(0);
            if (row >= 0 && row < H && col >= 0 && col < W)
                v = (Wt)cb_load(x, src + (long long)row * W + col);
            dst[i] = v;
        }
    }
}

template <typename T, typename Wt>
__device__ void fft_scatter_outputs(const Wt* __restrict__ out, const T* __restrict__ bias,
                                    T* __restrict__ y, int nb, int K, int P, int Q,
                                    long long t0, int tile_rows, int tile_cols, int lh, int lw,
                                    int th, int tw, int sh, int sw, int has_bias) {
    const int plane_size = th * tw;
    const int n_planes = nb * K;
    for (int plane = blockIdx.y; plane < n_planes; plane += gridDim.y) {
        const int k = plane % K;
        const TilePos tp = cb_tile_position(t0 + plane / K, tile_rows, tile_cols);
        const Wt* src = out + (long long)plane * lh * lw;
        const Wt bk = has_bias ? (Wt)cb_load(bias, k) : Wt(0);
        const long long dst = ((long long)tp.n * K + k) * P * Q;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < plane_size;
             i += gridDim.x * blockDim.x) {
            const int a = i / tw, e = i - a * tw;
            const int p = tp.ti * th + a, q = tp.tj * tw + e;
            if (p >= P || q >= Q) continue;
            cb_store(y, dst + (long long)p * Q + q, src[a * sh * lw + e * sw] + bk);
        }
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
