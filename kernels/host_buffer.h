// A growable host array in memory from Backend::AllocateHost (page-locked on a GPU), for data
// the device copies to and from in bulk, such as a step's logits rows. Like a std::vector of
// trivially copyable T without value-initialization: Resize keeps the contents up to the old
// size, new elements are uninitialized; capacity only grows, so that a buffer reused every
// step allocates (and, on a GPU, page-locks) only while it grows.
//
// Ownership: owns its memory; the backend that allocated it must outlive it. Without a
// backend (null), or when the backend cannot allocate (AllocateHost returns null), the memory
// is plain aligned host memory. Thread-safety: none.
#ifndef GLIMPSE_KERNELS_HOST_BUFFER_H_
#define GLIMPSE_KERNELS_HOST_BUFFER_H_

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

#include "kernels/backend.h"

namespace glimpse::kernels {

template <typename T>
class HostBuffer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  HostBuffer() = default;
  ~HostBuffer() { Release(); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  HostBuffer(HostBuffer&& other) noexcept { *this = std::move(other); }
  HostBuffer& operator=(HostBuffer&& other) noexcept {
    if (this != &other) {
      Release();
      backend_ = std::exchange(other.backend_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      plain_ = std::exchange(other.plain_, true);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }

  // Memory from here on comes from `backend` (null: plain host memory). What the buffer held
  // is freed and it is empty: call before the first Resize, or when the backend changes.
  void SetBackend(Backend* backend) {
    if (backend == backend_) return;
    Release();
    backend_ = backend;
  }
  Backend* backend() const { return backend_; }
  // True while the memory is the backend's (false without one, or when it could not give it).
  bool from_backend() const { return data_ != nullptr && !plain_; }

  // n elements: the first min(n, size()) kept, the rest uninitialized.
  void Resize(size_t n) {
    if (n > capacity_) Grow(std::max(n, capacity_ + capacity_ / 2));
    size_ = n;
  }
  // Room for n elements without allocating again (contents and size kept): what a buffer
  // needs at most, allocated at start-up rather than by the first step that needs it.
  void Reserve(size_t n) {
    if (n > capacity_) Grow(n);
  }
  void Clear() { size_ = 0; }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  std::span<T> span() { return {data_, size_}; }
  std::span<const T> span() const { return {data_, size_}; }

 private:
  void Grow(size_t capacity) {
    bool plain = true;
    T* grown = static_cast<T*>(Allocate(capacity * sizeof(T), plain));
    if (size_ > 0) std::memcpy(grown, data_, size_ * sizeof(T));
    Free(data_, plain_);
    data_ = grown;
    plain_ = plain;
    capacity_ = capacity;
  }
  // The new memory's kind goes to `plain` (the buffer's one allocation is freed its way).
  void* Allocate(size_t num_bytes, bool& plain) {
    void* p = backend_ != nullptr ? backend_->AllocateHost(num_bytes) : nullptr;
    plain = p == nullptr;
    if (!plain) return p;
    return ::operator new (std::max<size_t>(num_bytes, 1), std::align_val_t{64});
  }
  void Free(void* ptr, bool plain) {
    if (ptr == nullptr) return;
    if (plain) {
      ::operator delete (ptr, std::align_val_t{64});
    } else {
      backend_->FreeHost(ptr);
    }
  }
  void Release() {
    Free(data_, plain_);
    data_ = nullptr;
    plain_ = true;
    size_ = 0;
    capacity_ = 0;
  }

  Backend* backend_ = nullptr;
  T* data_ = nullptr;
  bool plain_ = true;  // data_ is plain memory, not the backend's
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace glimpse::kernels

#endif  // GLIMPSE_KERNELS_HOST_BUFFER_H_
