// Direct (sliding-window) convolution, NCHW, any stride, padding, dilation
// and groups.
//
// One thread block computes a DIRECT_TILE_P x DIRECT_TILE_Q tile of output
// pixels for DIRECT_K_BLOCK output channels of one image and one group; each
// thread owns one pixel and keeps its DIRECT_K_BLOCK sums in registers. Input
// channels are consumed in chunks: the chunk's input halo (the input window
// the tile reads, zero-padded) and its filters are staged in dynamic shared
// memory, so every input value is read from global memory once per block
// instead of R*S times. Filter values in shared memory are laid out
// [c][r][s][k], so the innermost loop reads DIRECT_K_BLOCK consecutive words
// that every thread of the warp shares (a broadcast). The host sizes the
// chunk so that both arrays fit in 48 KiB (kernels/gpu/direct.py).
//
// Tile geometry comes from the host as #defines (one source of truth).
#ifndef DIRECT_TILE_P
#error "DIRECT_TILE_P, DIRECT_TILE_Q and DIRECT_K_BLOCK come from kernels/gpu/direct.py"
#endif

template <typename T>
__device__ void direct_conv2d(const T* __restrict__ x, const T* __restrict__ w,
                              const T* __restrict__ bias, T* __restrict__ y, int C, int H,
                              int W, int K, int R, int S, int P, int Q, int sh, int sw, int pt,
                              int pl, int dh, int dw, int groups, int has_bias, int chunk) {
    typedef typename Acc<T>::type acc_t;
    CB_DYNAMIC_SHARED(acc_t, smem);
    const int Cg = C / groups, Kg = K / groups;
    const int k_blocks = (Kg + DIRECT_K_BLOCK - 1) / DIRECT_K_BLOCK;
    const int g = blockIdx.y / k_blocks;
    const int k0 = g * Kg + (blockIdx.y % k_blocks) * DIRECT_K_BLOCK;
    const int k_end = (g + 1) * Kg;
    const int n = blockIdx.z;
    const int tiles_q = (Q + DIRECT_TILE_Q - 1) / DIRECT_TILE_Q;
    const int p0 = (blockIdx.x / tiles_q) * DIRECT_TILE_P;
    const int q0 = (blockIdx.x % tiles_q) * DIRECT_TILE_Q;
    const int halo_h = (DIRECT_TILE_P - 1) * sh + (R - 1) * dh + 1;
    const int halo_w = (DIRECT_TILE_Q - 1) * sw + (S - 1) * dw + 1;
    const int halo = halo_h * halo_w;
    acc_t* s_in = smem;                 // [chunk][halo_h][halo_w]
    acc_t* s_w = smem + chunk * halo;   // [chunk][R][S][DIRECT_K_BLOCK]
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int n_threads = blockDim.x * blockDim.y;
    const int row0 = p0 * sh - pt, col0 = q0 * sw - pl;
    const int ty = threadIdx.y, tx = threadIdx.x;

    acc_t acc[DIRECT_K_BLOCK];
    for (int kk = 0; kk < DIRECT_K_BLOCK; ++kk) acc[kk] = 0;

    for (int c0 = 0; c0 < Cg; c0 += chunk) {
        const int cc = cb_imin(chunk, Cg - c0);
        const long long plane0 = ((long long)n * C + g * Cg + c0) * H;
        for (int i = tid; i < cc * halo; i += n_threads) {
            const int c = i / halo, rem = i - c * halo;
            const int row = row0 + rem / halo_w, col = col0 + rem % halo_w;
            acc_t v = 0;
            if (row >= 0 && row < H && col >= 0 && col < W)
                v = cb_load(x, (plane0 + (long long)c * H + row) * W + col);
            s_in[i] = v;
        }
        const int crs_count = cc * R * S;
        for (int i = tid; i < crs_count * DIRECT_K_BLOCK; i += n_threads) {
            const int kk = i % DIRECT_K_BLOCK, crs = i / DIRECT_K_BLOCK;
            const int k = k0 + kk;
            // w[k, c0 + c, r, s] with crs = (c*R + r)*S + s
            s_w[i] = k < k_end ? cb_load(w, ((long long)k * Cg + c0) * R * S + crs) : acc_t(0);
        }
        __syncthreads();
        for (int c = 0; c < cc; ++c) {
            for (int r = 0; r < R; ++r) {
                const acc_t* in_row = s_in + (c * halo_h + ty * sh + r * dh) * halo_w + tx * sw;
                const acc_t* w_rs = s_w + (c * R + r) * S * DIRECT_K_BLOCK;
                for (int s = 0; s < S; ++s) {
                    const acc_t v = in_row[s * dw];
                    for (int kk = 0; kk < DIRECT_K_BLOCK; ++kk)
                        acc[kk] = cb_fma(v, w_rs[s * DIRECT_K_BLOCK + kk], acc[kk]);
                }
            }
        }
        __syncthreads();  // before the next chunk overwrites shared memory
    }

    const int p = p0 + ty, q = q0 + tx;
    if (p >= P || q >= Q) return;
    for (int kk = 0; kk < DIRECT_K_BLOCK; ++kk) {
        const int k = k0 + kk;
        if (k >= k_end) break;
        acc_t v = acc[kk];
        if (has_bias) v += cb_load(bias, k);
        cb_store(y, (((long long)n * K + k) * P + p) * Q + q, v);
    }
}

#define DEFINE_DIRECT(SUFFIX, T)                                                              \
    extern "C" __global__ void __launch_bounds__(DIRECT_TILE_P * DIRECT_TILE_Q)              \
        direct_conv2d_##SUFFIX(const T* x, const T* w, const T* bias, T* y, int C, int H,    \
                               int W, int K, int R, int S, int P, int Q, int sh, int sw,      \
                               int pt, int pl, int dh, int dw, int groups, int has_bias,      \
                               int chunk) {                                                   \
        direct_conv2d<T>(x, w, bias, y, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw,      \
                         groups, has_bias, chunk);                                            \
    }                                                                                         \
    CB_EXPORT(direct_conv2d_##SUFFIX)

DEFINE_DIRECT(f32, float)
DEFINE_DIRECT(f64, double)
DEFINE_DIRECT(f16, cb_half)
