// The host emulator's launcher: cb_launch runs a registered kernel over its
// grid, one block at a time, with one std::thread per CUDA thread of the block
// (or all threads in turn on one OS thread when the caller says the kernel
// never synchronizes). Built together with a kernel source into a shared
// library that kernels/gpu/runtime.py loads with ctypes.
#include <barrier>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
dim3 blockDim;
dim3 gridDim;
unsigned char* cb_emu_shared = nullptr;

static std::barrier<>* cb_block_barrier = nullptr;

void __syncthreads() {
    if (cb_block_barrier == nullptr)
        throw std::logic_error("__syncthreads() in a kernel launched as barrier-free");
    cb_block_barrier->arrive_and_wait();
}

static std::map<std::string, cb_thunk>& cb_kernels() {
    static std::map<std::string, cb_thunk> table;
    return table;
}

void cb_register_kernel(const char* name, cb_thunk thunk) { cb_kernels()[name] = thunk; }

static void set_thread(unsigned t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = (t / blockDim.x) % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

static bool next_block() {  // x fastest, like the order blocks are numbered
    if (++blockIdx.x < gridDim.x) return true;
    blockIdx.x = 0;
    if (++blockIdx.y < gridDim.y) return true;
    blockIdx.y = 0;
    return ++blockIdx.z < gridDim.z;
}

extern "C" int cb_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                         unsigned by, unsigned bz, unsigned long shared_bytes, int synchronizes,
                         void** args, char* error, int error_len) {
    auto found = cb_kernels().find(name);
    if (found == cb_kernels().end()) {
        snprintf(error, error_len, "no kernel named %s in this module", name);
        return 1;
    }
    cb_thunk thunk = found->second;
    gridDim = dim3{gx, gy, gz};
    blockDim = dim3{bx, by, bz};
    std::vector<unsigned char> shared(shared_bytes + 16, 0);
    cb_emu_shared = shared.data();
    const unsigned threads = bx * by * bz;
    std::string failure;
    try {
        if (!synchronizes) {
            blockIdx = dim3{0, 0, 0};
            do {
                for (unsigned t = 0; t < threads; ++t) {
                    set_thread(t);
                    thunk(args);
                }
            } while (next_block());
        } else {
            std::barrier<> barrier(threads);
            cb_block_barrier = &barrier;
            std::vector<std::string> errors(threads);
            std::vector<std::thread> pool;
            pool.reserve(threads);
            for (unsigned t = 0; t < threads; ++t) {
                pool.emplace_back([&, t] {
                    set_thread(t);
                    blockIdx = dim3{0, 0, 0};
                    do {
                        try {
                            thunk(args);
                        } catch (const std::exception& exc) {
                            errors[t] = exc.what();
                        }
                        // Block end: no thread starts the next block while
                        // another still reads this block's shared memory.
                        barrier.arrive_and_wait();
                    } while (next_block());
                });
            }
            for (auto& th : pool) th.join();
            cb_block_barrier = nullptr;
            for (auto& e : errors)
                if (!e.empty()) failure = e;
        }
    } catch (const std::exception& exc) {
        failure = exc.what();
    }
    cb_emu_shared = nullptr;
    if (!failure.empty()) {
        snprintf(error, error_len, "%s", failure.c_str());
        return 2;
    }
    return 0;
}
