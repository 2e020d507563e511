// Direct (sliding-window) convolution, NCHW, any stride, padding, dilation
// and groups, in two variants that share the block's output tile and its
// shared-memory staging; the host picks one per problem (kernels/gpu/direct.py).
//
// direct_conv2d_tiled (register tiling, for K/g well above 8): one block of
// DIRECT_TILE_Q x DIRECT_K_GROUPS threads computes a DIRECT_TILE_P x
// DIRECT_TILE_Q output tile for DIRECT_TILED_K output channels. Each thread
// owns one output column of the tile (its DIRECT_TILE_P rows) and
// DIRECT_TILED_K / DIRECT_K_GROUPS channels: for every (c, r, s) it loads
// DIRECT_TILE_P input values and its channels' weights (16-byte vector loads,
// broadcast within each half-warp) and does DIRECT_TILE_P x that many FMAs
// from registers, so the FMA units rather than shared-memory loads bound it.
//
// direct_conv2d (one pixel per thread, for few channels per group, e.g.
// depthwise): one thread block computes a DIRECT_TILE_P x DIRECT_TILE_Q tile of output
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

// The part of the problem one thread block computes: output channels k0 .. k0 +
// k_width of group g (k_end: the group's end), image n, the output tile at (p0, q0),
// and the input window the tile reads, from (row0, col0), halo_h x halo_w.
struct DirectBlock {
    int g, k0, k_end, n, p0, q0, row0, col0, halo_h, halo_w;
};

__device__ __forceinline__ DirectBlock direct_block(int k_width, int Kg, int Q, int R, int S,
                                                    int sh, int sw, int pt, int pl, int dh,
                                                    int dw) {
    DirectBlock b;
    const int k_blocks = (Kg + k_width - 1) / k_width;
    const int tiles_q = (Q + DIRECT_TILE_Q - 1) / DIRECT_TILE_Q;
    b.g = blockIdx.y / k_blocks;
    b.k0 = b.g * Kg + (blockIdx.y % k_blocks) * k_width;
    b.k_end = (b.g + 1) * Kg;
    b.n = blockIdx.z;
    b.p0 = (blockIdx.x / tiles_q) * DIRECT_TILE_P;
    b.q0 = (blockIdx.x % tiles_q) * DIRECT_TILE_Q;
    b.row0 = b.p0 * sh - pt;
    b.col0 = b.q0 * sw - pl;
    b.halo_h = (DIRECT_TILE_P - 1) * sh + (R - 1) * dh + 1;
    b.halo_w = (DIRECT_TILE_Q - 1) * sw + (S - 1) * dw + 1;
    return b;
}

// Both variants stage one chunk of input channels per round: the chunk's
// zero-padded input halo [cc][halo_h][halo_w] and its filters [cc][R][S][k_width]
// for output channels k0 .. k0 + k_width (zeros past the group's k_end).
template <typename T, typename acc_t>
__device__ __forceinline__ void stage_halo(const T* __restrict__ x, acc_t* s_in, int cc,
                                           int halo_h, int halo_w, long long plane0, int H,
                                           int W, int row0, int col0, int tid, int n_threads) {
    const int halo = halo_h * halo_w;
    for (int i = tid; i < cc * halo; i += n_threads) {
        const int c = i / halo, rem = i - c * halo;
        const int row = row0 + rem / halo_w, cx = col0 + rem % halo_w;
        acc_t v = 0;
        if (row >= 0 && row < H && cx >= 0 && cx < W)
            v = cb_load(x, (plane0 + (long long)c * H + row) * W + cx);
        s_in[i] = v;
    }
}

template <typename T, typename acc_t>
__device__ __forceinline__ void stage_filters(const T* __restrict__ w, acc_t* s_w, int cc,
                                              int RS, int k_width, int k0, int k_end, int Cg,
                                              int c0, int tid, int n_threads) {
    for (int i = tid; i < cc * RS * k_width; i += n_threads) {
        const int kk = i % k_width, crs = i / k_width;
        const int k = k0 + kk;
        // w[k, c0 + c, r, s] with crs = (c*R + r)*S + s
        s_w[i] = k < k_end ? cb_load(w, ((long long)k * Cg + c0) * RS + crs) : acc_t(0);
    }
}

template <typename T>
__device__ void direct_conv2d(const T* __restrict__ x, const T* __restrict__ w,
                              const T* __restrict__ bias, T* __restrict__ y, int C, int H,
                              int W, int K, int R, int S, int P, int Q, int sh, int sw, int pt,
                              int pl, int dh, int dw, int groups, int has_bias, int chunk) {
    typedef typename Acc<T>::type acc_t;
    CB_DYNAMIC_SHARED(acc_t, smem);
    const int Cg = C / groups, Kg = K / groups;
    const DirectBlock blk = direct_block(DIRECT_K_BLOCK, Kg, Q, R, S, sh, sw, pt, pl, dh, dw);
    const int g = blk.g, k0 = blk.k0, k_end = blk.k_end, n = blk.n, p0 = blk.p0, q0 = blk.q0;
    const int halo_h = blk.halo_h, halo_w = blk.halo_w, row0 = blk.row0, col0 = blk.col0;
    const int halo = halo_h * halo_w;
    acc_t* s_in = smem;                 // [chunk][halo_h][halo_w]
    acc_t* s_w = smem + chunk * halo;   // [chunk][R][S][DIRECT_K_BLOCK]
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int n_threads = blockDim.x * blockDim.y;
    const int ty = threadIdx.y, tx = threadIdx.x;

    acc_t acc[DIRECT_K_BLOCK];
    for (int kk = 0; kk < DIRECT_K_BLOCK; ++kk) acc[kk] = 0;

    for (int c0 = 0; c0 < Cg; c0 += chunk) {
        const int cc = cb_imin(chunk, Cg - c0);
        const long long plane0 = ((long long)n * C + g * Cg + c0) * H;
        stage_halo(x, s_in, cc, halo_h, halo_w, plane0, H, W, row0, col0, tid, n_threads);
        stage_filters(w, s_w, cc, R * S, DIRECT_K_BLOCK, k0, k_end, Cg, c0, tid, n_threads);
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

#ifndef CONVBENCH_HOST_EMULATION
struct __align__(16) cb_float4 {
    float x, y, z, w;
};
struct __align__(16) cb_double2 {
    double x, y;
};
#endif

// N consecutive shared-memory values from a 16-byte aligned address, as
// 16-byte loads on the GPU.
template <int N>
__device__ __forceinline__ void cb_load_shared_vec(const float* p, float* out) {
#ifdef CONVBENCH_HOST_EMULATION
    for (int j = 0; j < N; ++j) out[j] = p[j];
#else
#pragma unroll
    for (int j = 0; j < N; j += 4) {
        const cb_float4 v = *reinterpret_cast<const cb_float4*>(p + j);
        out[j] = v.x;
        out[j + 1] = v.y;
        out[j + 2] = v.z;
        out[j + 3] = v.w;
    }
#endif
}
template <int N>
__device__ __forceinline__ void cb_load_shared_vec(const double* p, double* out) {
#ifdef CONVBENCH_HOST_EMULATION
    for (int j = 0; j < N; ++j) out[j] = p[j];
#else
#pragma unroll
    for (int j = 0; j < N; j += 2) {
        const cb_double2 v = *reinterpret_cast<const cb_double2*>(p + j);
        out[j] = v.x;
        out[j + 1] = v.y;
    }
#endif
}

template <typename T>
__device__ void direct_conv2d_tiled(const T* __restrict__ x, const T* __restrict__ w,
                                    const T* __restrict__ bias, T* __restrict__ y, int C, int H,
                                    int W, int K, int R, int S, int P, int Q, int sh, int sw,
                                    int pt, int pl, int dh, int dw, int groups, int has_bias,
                                    int chunk) {
    typedef typename Acc<T>::type acc_t;
    constexpr int KT = DIRECT_TILED_K;
    constexpr int KPT = DIRECT_TILED_K / DIRECT_K_GROUPS;  // channels per thread
    CB_DYNAMIC_SHARED(acc_t, smem);
    const int Cg = C / groups, Kg = K / groups;
    const DirectBlock blk = direct_block(KT, Kg, Q, R, S, sh, sw, pt, pl, dh, dw);
    const int g = blk.g, k0 = blk.k0, k_end = blk.k_end, n = blk.n, p0 = blk.p0, q0 = blk.q0;
    const int halo_h = blk.halo_h, halo_w = blk.halo_w, row0 = blk.row0, col0 = blk.col0;
    const int halo = halo_h * halo_w;
    // Weights start on a 16-byte boundary (vector loads): the halo is padded to 4 values.
    acc_t* s_in = smem;                               // [chunk][halo_h][halo_w]
    acc_t* s_w = smem + ((chunk * halo + 3) & ~3);    // [chunk][R][S][KT]
    const int col = threadIdx.x;                      // output column of the tile
    const int kq = threadIdx.y;                       // channel group of the block
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int n_threads = blockDim.x * blockDim.y;

    acc_t acc[DIRECT_TILE_P][KPT];
#pragma unroll
    for (int i = 0; i < DIRECT_TILE_P; ++i)
#pragma unroll
        for (int j = 0; j < KPT; ++j) acc[i][j] = 0;

    for (int c0 = 0; c0 < Cg; c0 += chunk) {
        const int cc = cb_imin(chunk, Cg - c0);
        const long long plane0 = ((long long)n * C + g * Cg + c0) * H;
        stage_halo(x, s_in, cc, halo_h, halo_w, plane0, H, W, row0, col0, tid, n_threads);
        stage_filters(w, s_w, cc, R * S, KT, k0, k_end, Cg, c0, tid, n_threads);
        __syncthreads();
        for (int c = 0; c < cc; ++c) {
            for (int r = 0; r < R; ++r) {
                const acc_t* in_col = s_in + (c * halo_h + r * dh) * halo_w + col * sw;
                const acc_t* w_rs = s_w + (c * R + r) * S * KT + kq * KPT;
                for (int s = 0; s < S; ++s) {
                    acc_t xv[DIRECT_TILE_P], wv[KPT];
#pragma unroll
                    for (int i = 0; i < DIRECT_TILE_P; ++i)
                        xv[i] = in_col[i * sh * halo_w + s * dw];
                    cb_load_shared_vec<KPT>(w_rs + s * KT, wv);
#pragma unroll
                    for (int i = 0; i < DIRECT_TILE_P; ++i)
#pragma unroll
                        for (int j = 0; j < KPT; ++j) acc[i][j] = cb_fma(xv[i], wv[j], acc[i][j]);
                }
            }
        }
        __syncthreads();  // before the next chunk overwrites shared memory
    }

    const int q = q0 + col;
    if (q >= Q) return;
#pragma unroll
    for (int j = 0; j < KPT; ++j) {
        const int k = k0 + kq * KPT + j;
        if (k >= k_end) break;
        const acc_t bk = has_bias ? cb_load(bias, k) : acc_t(0);
#pragma unroll
        for (int i = 0; i < DIRECT_TILE_P; ++i) {
            const int p = p0 + i;
            if (p < P) cb_store(y, (((long long)n * K + k) * P + p) * Q + q, acc[i][j] + bk);
        }
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
    CB_EXPORT(direct_conv2d_##SUFFIX)                                                          \
    extern "C" __global__ void __launch_bounds__(DIRECT_TILE_Q * DIRECT_K_GROUPS)            \
        direct_conv2d_tiled_##SUFFIX(const T* x, const T* w, const T* bias, T* y, int C,     \
                                     int H, int W, int K, int R, int S, int P, int Q, int sh, \
                                     int sw, int pt, int pl, int dh, int dw, int groups,      \
                                     int has_bias, int chunk) {                               \
        direct_conv2d_tiled<T>(x, w, bias, y, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw, \
                               groups, has_bias, chunk);                                      \
    }                                                                                         \
    CB_EXPORT(direct_conv2d_tiled_##SUFFIX)

DEFINE_DIRECT(f32, float)
DEFINE_DIRECT(f64, double)
DEFINE_DIRECT(f16, cb_half)
