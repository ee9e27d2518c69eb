// Kernel launches in emulated builds: rewrite_cuda_source.pl turns
//
//   Kernel<T, 4><<<grid, block, smem_bytes, stream>>>(a, b);
// into
//   ::cuda_emu::Launcher("Kernel<T, 4>", Kernel<T, 4>, grid, block, smem_bytes, stream)(a, b);
//
// The arguments are converted to the kernel's parameter types once (as the CUDA runtime copies
// them), then every thread of every block calls the kernel with its own copy. The launch runs
// in its stream's order (RunOnStream), or is recorded when its stream is being captured.
#ifndef GLIMPSE_KERNELS_CUDA_EMULATION_LAUNCH_H_
#define GLIMPSE_KERNELS_CUDA_EMULATION_LAUNCH_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cuda/emulation/include/cuda_runtime_api.h"

namespace cuda_emu {

struct LaunchShape {
  dim3 grid;
  dim3 block;
  size_t dynamic_smem_bytes = 0;
};

// Runs (or records, on a capturing stream) `thread_body` once per thread of `shape`; invalid
// shapes set the runtime's last error instead. `kernel` identifies the function for
// cudaFuncSetAttribute limits and error messages; `pointer_args` are the kernel's pointer
// arguments, each of which must be null or inside a device allocation.
void LaunchKernel(const char* name, const void* kernel, const LaunchShape& shape,
                  cudaStream_t stream, std::shared_ptr<const std::function<void()>> thread_body,
                  const std::vector<const void*>& pointer_args);

// Runs `work` in `stream`'s order: queued until the host synchronizes with a created stream
// (runtime.cc's stream order), at once on the legacy stream or with
// GLIMPSE_CUDA_EMULATION_STREAMS=eager, or appended to the graph being captured on `stream`
// (cuBLAS and NCCL stand-ins use this too). Returns the error a capture rule violation gives
// (e.g. the legacy stream while this thread captures).
cudaError_t RunOnStream(cudaStream_t stream, std::function<void()> work, const char* what);

// As RunOnStream, but outside a capture the stream's queued work and then `work` run before
// this returns: for NCCL collectives, whose ranks must meet (one rank's stream cannot wait in
// a queue that only its own host thread will run while the others wait for it).
cudaError_t RunOnStreamNow(cudaStream_t stream, std::function<void()> work, const char* what);

// Whether [ptr, ptr + bytes) lies in one device allocation (for emulated instructions that
// read device memory themselves, such as the bulk tensor copies of bulk_copy.cc).
bool InDeviceMemory(const void* ptr, size_t bytes);

template <typename... Params>
class Launcher {
 public:
  Launcher(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
           size_t smem_bytes = 0, cudaStream_t stream = nullptr)
      : name_(name), kernel_(kernel), shape_{grid, block, smem_bytes}, stream_(stream) {}

  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "kernel argument count");
    auto params = std::make_shared<std::tuple<std::decay_t<Params>...>>(
        static_cast<std::decay_t<Params>>(std::forward<Args>(args))...);
    std::vector<const void*> pointers;
    std::apply([&](const auto&... p) { (CollectPointer(p, &pointers), ...); }, *params);
    auto kernel = kernel_;
    auto body = std::make_shared<const std::function<void()>>(
        [kernel, params] { std::apply(kernel, *params); });
    LaunchKernel(name_, reinterpret_cast<const void*>(kernel_), shape_, stream_, std::move(body),
                 pointers);
  }

 private:
  template <typename T>
  static void CollectPointer(const T& value, std::vector<const void*>* out) {
    if constexpr (std::is_pointer_v<T>) out->push_back(static_cast<const void*>(value));
  }

  const char* name_;
  void (*kernel_)(Params...);
  LaunchShape shape_;
  cudaStream_t stream_;
};

}  // namespace cuda_emu

#endif  // GLIMPSE_KERNELS_CUDA_EMULATION_LAUNCH_H_
