// Host emulation of the CUDA features convbench's kernels use, so that the
// very same .cu text runs on a CPU in the tests (no GPU in CI). Each CUDA
// thread of a block is a std::thread; __syncthreads is a std::barrier; blocks
// run one after another, so a function-local `static` is exactly one block's
// __shared__ array. Emulation checks index maps and synchronization structure;
// it says nothing about speed, and races between blocks cannot show up.
#ifndef CONVBENCH_HOST_SHIM_H
#define CONVBENCH_HOST_SHIM_H

#include <cmath>
#include <cstddef>
#include <cstring>

#define CONVBENCH_HOST_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict
#define __launch_bounds__(...)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

extern thread_local dim3 threadIdx;
extern thread_local dim3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
extern unsigned char* cb_emu_shared;
void __syncthreads();

using std::fma;
using std::fmaf;

// Kernel registry: CB_EXPORT(name) makes an extern "C" kernel launchable by
// name with CUDA's kernelParams convention (an array of pointers to arguments).
typedef void (*cb_thunk)(void** args);
void cb_register_kernel(const char* name, cb_thunk thunk);

#include <type_traits>
#include <utility>

template <class... A, std::size_t... I>
void cb_invoke_impl(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <class... A>
void cb_invoke(void (*f)(A...), void** args) {
    cb_invoke_impl(f, args, std::index_sequence_for<A...>{});
}

struct cb_registrar {
    cb_registrar(const char* name, cb_thunk thunk) { cb_register_kernel(name, thunk); }
};

#define CB_EXPORT(name) \
    static cb_registrar cb_registrar_##name(#name, [](void** a) { cb_invoke(name, a); });

#endif  // CONVBENCH_HOST_SHIM_H
