// What every convbench CUDA source shares: storage and accumulation types,
// loads and stores, and the two hooks (dynamic shared memory, kernel export)
// that let the same text build with NVRTC/nvcc for a GPU or with g++ for the
// host emulator the CPU-only tests run (kernels/gpu/cuda/host_shim.h).
#ifndef CONVBENCH_COMMON_CUH
#define CONVBENCH_COMMON_CUH

// IEEE binary16 kept as its 16 bits: storage only, arithmetic is float.
// Converting with PTX instead of cuda_fp16.h keeps the source free of
// headers, so NVRTC needs no include path.
typedef unsigned short cb_half;

#ifdef CONVBENCH_HOST_EMULATION
static inline float cb_half_to_float(cb_half h) {
    _Float16 f;
    memcpy(&f, &h, sizeof f);
    return static_cast<float>(f);
}
static inline cb_half cb_float_to_half(float v) {
    _Float16 f = static_cast<_Float16>(v);  // round to nearest even, like cvt.rn
    cb_half h;
    memcpy(&h, &f, sizeof h);
    return h;
}
#define CB_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(cb_emu_shared)
#else
__device__ __forceinline__ float cb_half_to_float(cb_half h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ cb_half cb_float_to_half(float v) {
    cb_half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}
#define CB_DYNAMIC_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char cb_shared_raw[]; \
    T* name = reinterpret_cast<T*>(cb_shared_raw)
#define CB_EXPORT(name)
#endif

// Accumulation type of a storage type: float16 data accumulates in float32.
template <typename T> struct Acc;
template <> struct Acc<float> { typedef float type; };
template <> struct Acc<double> { typedef double type; };
template <> struct Acc<cb_half> { typedef float type; };

__device__ __forceinline__ float cb_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ double cb_load(const double* p, long long i) { return p[i]; }
__device__ __forceinline__ float cb_load(const cb_half* p, long long i) {
    return cb_half_to_float(p[i]);
}
__device__ __forceinline__ void cb_store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void cb_store(double* p, long long i, double v) { p[i] = v; }
__device__ __forceinline__ void cb_store(cb_half* p, long long i, float v) {
    p[i] = cb_float_to_half(v);
}

__device__ __forceinline__ float cb_fma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double cb_fma(double a, double b, double c) { return fma(a, b, c); }

__device__ __forceinline__ int cb_imin(int a, int b) { return a < b ? a : b; }

// Image, tile row and tile column of flat tile index t (tiles numbered
// image-major, then row, then column), as kernels/cpu/fft.py's tile_position.
struct TilePos {
    int n, ti, tj;
};
__device__ __forceinline__ TilePos cb_tile_position(long long t, int tile_rows, int tile_cols) {
    TilePos pos;
    pos.n = (int)(t / ((long long)tile_rows * tile_cols));
    pos.ti = (int)((t / tile_cols) % tile_rows);
    pos.tj = (int)(t % tile_cols);
    return pos;
}

// Grid-stride loop over [0, total): launches may use fewer blocks than items.
#define CB_GRID_STRIDE_LOOP(i, total)                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)gridDim.x * blockDim.x)

#endif  // CONVBENCH_COMMON_CUH
