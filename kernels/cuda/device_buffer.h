// DeviceBuffer<T>: owns one cudaMalloc allocation of `size()` elements of T (RAII, move-only).
// Allocation failure is reported as a cudaError_t, never thrown:
//
//   DeviceBuffer<float> buf;
//   GLIMPSE_CUDA_RETURN_IF_ERROR(buf.Allocate(n));
//
// Not thread-safe; a buffer is used by one host thread. The destructor frees with cudaFree,
// which synchronizes the device; keep buffers alive across a step, not per launch.
#ifndef GLIMPSE_KERNELS_CUDA_DEVICE_BUFFER_H_
#define GLIMPSE_KERNELS_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

namespace glimpse::kernels::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  // Frees any previous allocation, then allocates `num_elements` (uninitialized; cudaMalloc
  // memory is 256-byte aligned, enough for every vector access in kernels/cuda).
  cudaError_t Allocate(size_t num_elements) {
    Reset();
    if (num_elements == 0) return cudaSuccess;
    void* ptr = nullptr;
    const cudaError_t err = cudaMalloc(&ptr, num_elements * sizeof(T));
    if (err != cudaSuccess) return err;
    data_ = static_cast<T*>(ptr);
    size_ = num_elements;
    return cudaSuccess;
  }

  void Reset() {
    if (data_ != nullptr) {
      // Nothing useful can be done with a cudaFree error in a destructor; a sticky error
      // resurfaces at the owner's next checked call.
      (void)cudaFree(data_);
    }
    data_ = nullptr;
    size_ = 0;
  }

  T* get() const { return data_; }
  size_t size() const { return size_; }
  size_t num_bytes() const { return size_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_DEVICE_BUFFER_H_
