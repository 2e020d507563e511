// im2col lowering and bias, NCHW. The lowered matrix has exactly the layout
// of the CPU kernel (kernels/cpu/im2col.py), so cuBLAS consumes it as one
// batched GEMM whose output is the NCHW output block:
//
//   col[b, (c*R + r)*S + s, pp*Q + q] = x_padded[n0+b, c, (p0+pp)*sh + r*dh, q*sw + s*dw]
//
// One thread per element of col, in col's memory order, so writes coalesce.
// Values are copied as they are stored (float16 stays float16).

template <typename T>
__device__ void im2col_lower(const T* __restrict__ x, T* __restrict__ col, int nb, int C,
                             int H, int W, int n0, int p0, int rows, int R, int S, int sh,
                             int sw, int pt, int pl, int dh, int dw, int Q) {
    const long long total = (long long)nb * C * R * S * rows * Q;
    CB_GRID_STRIDE_LOOP(i, total) {
        long long t = i / Q;
        const int q = (int)(i - t * Q);
        const int pp = (int)(t % rows);
        t /= rows;
        const int s = (int)(t % S);
        t /= S;
        const int r = (int)(t % R);
        t /= R;
        const int c = (int)(t % C);
        const int b = (int)(t / C);
        const int row = (p0 + pp) * sh - pt + r * dh;
        const int cx = q * sw - pl + s * dw;
        T v = T(0);  // all-zero bits are +0 in every storage type
        if (row >= 0 && row < H && cx >= 0 && cx < W)
            v = x[(((long long)(n0 + b) * C + c) * H + row) * W + cx];
        col[i] = v;
    }
}

// y[n, k, :, :] += bias[k], in the accumulation type, rounded once.
template <typename T>
__device__ void add_bias(T* __restrict__ y, const T* __restrict__ bias, long long total, int K,
                         int plane) {
    CB_GRID_STRIDE_LOOP(i, total) {
        const int k = (int)((i / plane) % K);
        cb_store(y, i, cb_load(y, i) + cb_load(bias, k));
    }
}

#define DEFINE_IM2COL(SUFFIX, T)                                                              \
    extern "C" __global__ void im2col_lower_##SUFFIX(                                         \
        const T* x, T* col, int nb, int C, int H, int W, int n0, int p0, int rows, int R,     \
        int S, int sh, int sw, int pt, int pl, int dh, int dw, int Q) {                       \
        im2col_lower<T>(x, col, nb, C, H, W, n0, p0, rows, R, S, sh, sw, pt, pl, dh, dw, Q); \
    }                                                                                         \
    CB_EXPORT(im2col_lower_##SUFFIX)                                                          \
    extern "C" __global__ void add_bias_##SUFFIX(T* y, const T* bias, long long total, int K, \
                                                 int plane) {                                 \
        add_bias<T>(y, bias, total, K, plane);                                                \
    }                                                                                         \
    CB_EXPORT(add_bias_##SUFFIX)

DEFINE_IM2COL(f32, float)
DEFINE_IM2COL(f64, double)
DEFINE_IM2COL(f16, cb_half)
