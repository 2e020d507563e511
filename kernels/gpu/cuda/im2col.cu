// im2col lowering and bias, NCHW. The lowered matrix has exactly the layout
// of the CPU kernel (kernels/algorithms/im2col.py), so cuBLAS consumes it as
// one strided-batched GEMM per tile whose output is the NCHW output block:
//
//   col[b, (c*R + r)*S + s, pp*Q + q] = x_padded[n0+b, c, (p0+pp)*sh + r*dh, q*sw + s*dw]
//
// One lowered row (b, c, r, s) per blockIdx.y, decoded once; its rows*Q
// elements across x, in memory order, so writes coalesce and the per-element
// index arithmetic is one 32-bit division. Values are copied as they are
// stored (float16 stays float16).

template <typename T>
__device__ void im2col_lower(const T* __restrict__ x, T* __restrict__ col, int nb, int C,
                             int H, int W, int n0, int p0, int rows, int R, int S, int sh,
                             int sw, int pt, int pl, int dh, int dw, int Q) {
    const int row_length = rows * Q;
    const int n_rows = nb * C * R * S;
    for (int row = blockIdx.y; row < n_rows; row += gridDim.y) {
        int t = row;
        const int s = t % S;
        t /= S;
        const int r = t % R;
        t /= R;
        const int c = t % C;
        const int b = t / C;
        const T* plane = x + ((long long)(n0 + b) * C + c) * H * W;
        T* out = col + (long long)row * row_length;
        const int dy = p0 * sh + r * dh - pt, dx = s * dw - pl;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < row_length;
             j += gridDim.x * blockDim.x) {
            const int pp = j / Q, q = j - pp * Q;
            const int iy = pp * sh + dy, ix = q * sw + dx;
            T v = T(0);  // all-zero bits are +0 in every storage type
            if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = plane[(long long)iy * W + ix];
            out[j] = v;
        }
    }
}

// y[n, k, :, :] = bias[k]: the GEMMs then add the products to it (beta = 1), so the
// sum with the bias is rounded once, in the GEMM's accumulation precision.
template <typename T>
__device__ void fill_bias(T* __restrict__ y, const T* __restrict__ bias, long long total, int K,
                          int plane) {
    CB_GRID_STRIDE_LOOP(i, total) y[i] = bias[(i / plane) % K];
}

#define DEFINE_IM2COL(SUFFIX, T)                                                              \
    extern "C" __global__ void im2col_lower_##SUFFIX(                                         \
        const T* x, T* col, int nb, int C, int H, int W, int n0, int p0, int rows, int R,     \
        int S, int sh, int sw, int pt, int pl, int dh, int dw, int Q) {                       \
        im2col_lower<T>(x, col, nb, C, H, W, n0, p0, rows, R, S, sh, sw, pt, pl, dh, dw, Q); \
    }                                                                                         \
    CB_EXPORT(im2col_lower_##SUFFIX)                                                          \
    extern "C" __global__ void fill_bias_##SUFFIX(T* y, const T* bias, long long total,       \
                                                  int K, int plane) {                         \
        fill_bias<T>(y, bias, total, K, plane);                                               \
    }                                                                                         \
    CB_EXPORT(fill_bias_##SUFFIX)

DEFINE_IM2COL(f32, float)
DEFINE_IM2COL(f64, double)
DEFINE_IM2COL(f16, cb_half)
