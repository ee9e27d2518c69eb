// The CUDA runtime API of include/cuda_runtime_api.h, on the CPU (see README.md).
//
// Thread-safety: the device-memory table and graphs are guarded by one mutex, the set of live
// streams by another (RuntimeState::streams_mu), each stream's queue of deferred work by its
// own (a stream is driven by one host thread at a time, as glimpse's are); the last error is
// per host thread, as in CUDA; a grid runs its blocks on a small pool of OS threads, and
// returns when every block has finished.
//
// Stream order. A GPU runs a stream's work some time after the host enqueued it, in order;
// the host sees results only after a synchronization. By default
// (GLIMPSE_CUDA_EMULATION_STREAMS=deferred) work on a created stream is queued and runs at the
// last moment the host could still be owed it: when the host synchronizes with that stream
// (cudaStreamSynchronize, cudaEventSynchronize of an event recorded on it, cudaDeviceSynchronize,
// and the calls that synchronize implicitly: cudaFree, cudaFreeHost, cudaStreamDestroy, and
// legacy-stream work for streams not created cudaStreamNonBlocking). So a host that reads a
// copy's page-locked destination before synchronizing reads what was there before, and one
// that rewrites a page-locked source before the copy has run changes what is copied — on a GPU
// both are races that usually go unnoticed. Copies between the device and pageable memory
// behave as CUDA documents: from pageable memory the bytes are taken at the call, into
// pageable memory the call waits for the stream. Legacy-stream work (the kernel tests') and
// NCCL collectives (their ranks meet at once; see RunOnStreamNow) still run at the call.
// GLIMPSE_CUDA_EMULATION_STREAMS=eager runs everything at the call, as before.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda/emulation/block_runner.h"
#include "kernels/cuda/emulation/include/cuda_runtime_api.h"
#include "kernels/cuda/emulation/launch.h"

struct CUgraph_st {
  std::vector<std::function<void()>> nodes;
};
struct CUgraphExec_st {
  // Shared with launches still queued, so that destroying the exec cannot pull them away.
  std::shared_ptr<const std::vector<std::function<void()>>> nodes;
};
struct CUstream_st {
  bool capturing = false;
  bool invalidated = false;
  std::thread::id capture_thread;
  CUgraph_st* graph = nullptr;
  bool blocking = true;  // not cudaStreamNonBlocking: legacy-stream work waits for it

  // Deferred work (see the top of the file): queued in order; `enqueued` counts every item
  // ever queued (those no longer pending have run). queue_mu guards both; run_mu is held by
  // the thread running the queue, so that two synchronizing threads cannot run items out of
  // order.
  std::mutex queue_mu;
  std::deque<std::function<void()>> pending;
  uint64_t enqueued = 0;
  std::mutex run_mu;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point time;
  bool recorded = false;
  // Deferred streams: the stream of the last record and its place in that stream's queue
  // (cudaEventSynchronize runs the stream up to it).
  CUstream_st* stream = nullptr;
  uint64_t position = 0;
};

namespace cuda_emu {
namespace {

constexpr size_t kMaxDynamicSmemOptin = 232448;  // an H100/H200's 227 KiB
constexpr size_t kDefaultDynamicSmemLimit = 48 << 10;
constexpr int kSmCount = 132;

enum class MemoryKind { kDevice, kPinnedHost };
struct Allocation {
  size_t bytes;
  MemoryKind kind;
};

struct RuntimeState {
  std::mutex mu;
  std::map<uintptr_t, Allocation> allocations;
  size_t device_bytes_in_use = 0;
  std::map<const void*, size_t> dynamic_smem_limits;  // cudaFuncSetAttribute
  int captures_in_progress = 0;
  cudaError_t sticky = cudaSuccess;
  // Live created streams. streams_mu guards the set and is held while RunAllQueued or
  // RunUpToEvent runs a stream's queue, so that no thread destroys the stream meanwhile (a
  // tensor-parallel rank may free memory while another destroys its stream). Queued work
  // never waits for another thread, so holding it while the work runs cannot deadlock.
  std::mutex streams_mu;
  std::set<CUstream_st*> streams;
};

RuntimeState& State() {
  static RuntimeState* state = new RuntimeState();
  return *state;
}

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;
thread_local CUstream_st* t_capturing_stream = nullptr;

size_t EnvSize(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long parsed = std::strtoull(v, &end, 10);
  if (end == v || *end != '\0') {
    std::fprintf(stderr, "CUDA emulation: %s=%s is not a number\n", name, v);
    std::exit(2);
  }
  return static_cast<size_t>(parsed);
}

size_t DeviceMemoryBytes() {
  static const size_t bytes = EnvSize("GLIMPSE_CUDA_EMULATION_MEMORY_MB", 4096) << 20;
  return bytes;
}
int NumDevices() {
  static const int n = static_cast<int>(EnvSize("GLIMPSE_CUDA_EMULATION_DEVICES", 2));
  return n;
}

// Whether created streams defer their work (the default) or run it at the call.
bool DeferredStreams() {
  static const bool deferred = [] {
    const char* v = std::getenv("GLIMPSE_CUDA_EMULATION_STREAMS");
    if (v == nullptr || *v == '\0' || std::strcmp(v, "deferred") == 0) return true;
    if (std::strcmp(v, "eager") == 0) return false;
    std::fprintf(stderr,
                 "CUDA emulation: GLIMPSE_CUDA_EMULATION_STREAMS=%s is not one of deferred, "
                 "eager\n",
                 v);
    std::exit(2);
  }();
  return deferred;
}

cudaError_t SetError(cudaError_t err) {
  if (err != cudaSuccess) t_last_error = err;
  return err;
}

// Says what the emulator caught that the hardware would have reported less clearly.
cudaError_t Misuse(cudaError_t err, const std::string& message) {
  std::fprintf(stderr, "CUDA emulation: %s\n", message.c_str());
  return SetError(err);
}

// A call that synchronizes with the device, which a capturing thread may not make (it
// invalidates the capture, as CUDA does in global and thread-local modes).
bool ProhibitedDuringCapture(const char* call) {
  if (t_capturing_stream == nullptr) return false;
  t_capturing_stream->invalidated = true;
  Misuse(cudaErrorStreamCaptureUnsupported,
         std::string(call) + " while this thread captures a stream: not allowed in graph capture");
  return true;
}

// The allocation holding [ptr, ptr + bytes), or null.
const Allocation* FindAllocation(const void* ptr, size_t bytes, uintptr_t* base) {
  RuntimeState& s = State();
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  auto it = s.allocations.upper_bound(p);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  if (p + bytes > it->first + it->second.bytes && !(bytes == 0 && p == it->first + it->second.bytes)) {
    return nullptr;
  }
  if (base != nullptr) *base = it->first;
  return &it->second;
}

bool IsDeviceRange(const void* ptr, size_t bytes) {
  std::lock_guard<std::mutex> lock(State().mu);
  return FindAllocation(ptr, bytes, nullptr) != nullptr;
}

bool IsDeviceMemory(const void* ptr, size_t bytes) {
  std::lock_guard<std::mutex> lock(State().mu);
  const Allocation* a = FindAllocation(ptr, bytes, nullptr);
  return a != nullptr && a->kind == MemoryKind::kDevice;
}

// Host memory CUDA did not allocate (neither device memory nor cudaHostAlloc's).
bool IsPageableHostMemory(const void* ptr) {
  std::lock_guard<std::mutex> lock(State().mu);
  return FindAllocation(ptr, 0, nullptr) == nullptr;
}

// ---- Deferred stream work ----
// Appends work to s's queue (its position: s->enqueued after the call).
void Enqueue(CUstream_st* s, std::function<void()> work) {
  std::lock_guard<std::mutex> lock(s->queue_mu);
  s->pending.push_back(std::move(work));
  ++s->enqueued;
}

// Runs s's queued work in order until `position` items have run (all of it by default). The
// work runs outside queue_mu: a collective inside it may wait for another thread.
void RunQueued(CUstream_st* s, uint64_t position = UINT64_MAX) {
  std::lock_guard<std::mutex> running(s->run_mu);
  for (;;) {
    std::function<void()> work;
    {
      std::lock_guard<std::mutex> lock(s->queue_mu);
      const uint64_t ran = s->enqueued - s->pending.size();
      if (s->pending.empty() || ran >= position) return;
      work = std::move(s->pending.front());
    }
    work();  // still in `pending` while it runs: counted as run only once it has
    std::lock_guard<std::mutex> lock(s->queue_mu);
    s->pending.pop_front();
  }
}

// Runs the queued work of every live stream (only of the blocking ones: what legacy-stream
// work waits for). Nothing to run with GLIMPSE_CUDA_EMULATION_STREAMS=eager.
void RunAllQueued(bool blocking_only) {
  std::lock_guard<std::mutex> lock(State().streams_mu);
  for (CUstream_st* s : State().streams) {
    if (!blocking_only || s->blocking) RunQueued(s);
  }
}

// ---- Block execution on a pool of OS threads ----
class BlockPool {
 public:
  static BlockPool& Get() {
    static BlockPool* pool = new BlockPool();
    return *pool;
  }

  void Run(const char* name, const LaunchShape& shape, const std::function<void()>& body) {
    const uint64_t num_blocks =
        static_cast<uint64_t>(shape.grid.x) * shape.grid.y * shape.grid.z;
    const internal::Schedule schedule = Schedule();
    const std::function<void(uint64_t)> run_block = [&](uint64_t b) {
      const uint3 idx{static_cast<unsigned>(b % shape.grid.x),
                      static_cast<unsigned>(b / shape.grid.x % shape.grid.y),
                      static_cast<unsigned>(b / (static_cast<uint64_t>(shape.grid.x) *
                                                 shape.grid.y))};
      internal::BlockRunner::ForThisThread().RunBlock(name, shape, idx, body, schedule);
    };
    if (workers_.empty() || num_blocks == 1) {
      for (uint64_t b = 0; b < num_blocks; ++b) run_block(b);
      return;
    }
    // One grid at a time on the pool: host threads that launch at once (a thread per
    // tensor-parallel rank) take turns. A kernel never waits for another host thread, so this
    // cannot deadlock; single-block grids above run on their own thread.
    std::lock_guard<std::mutex> one_grid_at_a_time(launch_mu_);
    std::unique_lock<std::mutex> lock(mu_);
    job_ = &run_block;
    num_blocks_ = num_blocks;
    next_block_.store(0);
    active_ = static_cast<int>(workers_.size());
    ++generation_;
    lock.unlock();
    wake_.notify_all();
    for (uint64_t b = next_block_.fetch_add(1); b < num_blocks; b = next_block_.fetch_add(1)) {
      run_block(b);
    }
    lock.lock();
    done_.wait(lock, [&] { return active_ == 0; });
    job_ = nullptr;
  }

 private:
  BlockPool() {
    const size_t hw = std::max(1u, std::thread::hardware_concurrency());
    const size_t threads = EnvSize("GLIMPSE_CUDA_EMULATION_THREADS", std::min<size_t>(hw, 8));
    for (size_t i = 1; i < threads; ++i) {
      workers_.emplace_back([this] { WorkerLoop(); });
      workers_.back().detach();
    }
  }

  static internal::Schedule Schedule() {
    static const internal::Schedule s = internal::ScheduleFromEnvironment();
    return s;
  }

  void WorkerLoop() {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      const std::function<void(uint64_t)>* job = job_;
      const uint64_t n = num_blocks_;
      lock.unlock();
      for (uint64_t b = next_block_.fetch_add(1); b < n; b = next_block_.fetch_add(1)) (*job)(b);
      lock.lock();
      if (--active_ == 0) done_.notify_all();
    }
  }

  std::mutex launch_mu_;  // held by the host thread whose grid the pool runs
  std::mutex mu_;         // guards the job fields below
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  const std::function<void(uint64_t)>* job_ = nullptr;
  uint64_t num_blocks_ = 0;
  std::atomic<uint64_t> next_block_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
};

bool IsLegacyStream(cudaStream_t stream) {
  return stream == nullptr || stream == cudaStreamLegacy;
}

CUstream_st* RealStream(cudaStream_t stream) {
  if (IsLegacyStream(stream) || stream == cudaStreamPerThread) return nullptr;
  return stream;
}

}  // namespace

cudaError_t RunOnStream(cudaStream_t stream, std::function<void()> work, const char* what) {
  CUstream_st* s = RealStream(stream);
  if (s != nullptr && s->capturing) {
    if (s->capture_thread != std::this_thread::get_id()) {
      // Another thread's capture: in thread-local mode this thread may not use the stream.
      s->invalidated = true;
      return Misuse(cudaErrorStreamCaptureUnsupported,
                    std::string(what) + " on a stream another thread is capturing");
    }
    s->graph->nodes.push_back(std::move(work));
    return cudaSuccess;
  }
  if (IsLegacyStream(stream) && t_capturing_stream != nullptr) {
    t_capturing_stream->invalidated = true;
    return Misuse(cudaErrorStreamCaptureImplicit,
                  std::string(what) +
                      " on the legacy default stream while this thread captures a stream");
  }
  if (s != nullptr && DeferredStreams()) {
    Enqueue(s, std::move(work));
    return cudaSuccess;
  }
  if (IsLegacyStream(stream)) RunAllQueued(/*blocking_only=*/true);
  work();
  return cudaSuccess;
}

cudaError_t RunOnStreamNow(cudaStream_t stream, std::function<void()> work, const char* what) {
  CUstream_st* s = RealStream(stream);
  if (s == nullptr || s->capturing || !DeferredStreams()) {
    return RunOnStream(stream, std::move(work), what);
  }
  RunQueued(s);  // what the stream owes first
  work();
  return cudaSuccess;
}

void LaunchKernel(const char* name, const void* kernel, const LaunchShape& shape,
                  cudaStream_t stream, std::shared_ptr<const std::function<void()>> thread_body,
                  const std::vector<const void*>& pointer_args) {
  const uint64_t threads = static_cast<uint64_t>(shape.block.x) * shape.block.y * shape.block.z;
  if (threads == 0 || threads > 1024 || shape.block.z > 64 || shape.grid.x == 0 ||
      shape.grid.y == 0 || shape.grid.z == 0 || shape.grid.x > 0x7fffffffu ||
      shape.grid.y > 65535 || shape.grid.z > 65535) {
    Misuse(cudaErrorInvalidConfiguration,
           std::string("launch of ") + name + " with grid (" + std::to_string(shape.grid.x) +
               "," + std::to_string(shape.grid.y) + "," + std::to_string(shape.grid.z) +
               ") and block (" + std::to_string(shape.block.x) + "," +
               std::to_string(shape.block.y) + "," + std::to_string(shape.block.z) +
               "): invalid configuration");
    return;
  }
  size_t smem_limit = kDefaultDynamicSmemLimit;
  {
    std::lock_guard<std::mutex> lock(State().mu);
    const auto it = State().dynamic_smem_limits.find(kernel);
    if (it != State().dynamic_smem_limits.end()) smem_limit = it->second;
  }
  if (shape.dynamic_smem_bytes > smem_limit) {
    Misuse(cudaErrorInvalidValue,
           std::string("launch of ") + name + " with " + std::to_string(shape.dynamic_smem_bytes) +
               " bytes of dynamic shared memory; the limit is " + std::to_string(smem_limit) +
               " (raise it with cudaFuncSetAttribute(MaxDynamicSharedMemorySize))");
    return;
  }
  for (size_t i = 0; i < pointer_args.size(); ++i) {
    if (pointer_args[i] != nullptr && !IsDeviceRange(pointer_args[i], 0)) {
      Misuse(cudaErrorInvalidValue,
             std::string("launch of ") + name + ": pointer argument " + std::to_string(i) +
                 " is not in device memory (a host pointer, or a freed allocation)");
      return;
    }
  }
  const LaunchShape captured_shape = shape;
  const cudaError_t err = RunOnStream(
      stream,
      [name, captured_shape, thread_body] {
        BlockPool::Get().Run(name, captured_shape, *thread_body);
      },
      name);
  SetError(err);
}

bool InDeviceMemory(const void* ptr, size_t bytes) { return IsDeviceMemory(ptr, bytes); }

}  // namespace cuda_emu

using cuda_emu::Misuse;
using cuda_emu::SetError;
using cuda_emu::State;

// ---- Errors and devices ----------------------------------------------------------------------
cudaError_t cudaGetLastError() {
  const cudaError_t err = cuda_emu::t_last_error;
  cuda_emu::t_last_error = cudaSuccess;
  return err != cudaSuccess ? err : State().sticky;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorUnknown: return "cudaErrorUnknown";
  }
  return "cudaErrorUnrecognized";
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    default: return cudaGetErrorName(error);
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = cuda_emu::NumDevices();
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= cuda_emu::NumDevices()) return SetError(cudaErrorInvalidDevice);
  cuda_emu::t_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = cuda_emu::t_device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= cuda_emu::NumDevices()) return SetError(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "glimpse CUDA emulation on the CPU (sm_90 limits)");
  prop->totalGlobalMem = cuda_emu::DeviceMemoryBytes();
  prop->sharedMemPerBlock = cuda_emu::kDefaultDynamicSmemLimit;
  prop->sharedMemPerBlockOptin = cuda_emu::kMaxDynamicSmemOptin;
  prop->sharedMemPerMultiprocessor = 233472;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = cuda_emu::kSmCount;
  prop->l2CacheSize = 50 << 20;
  prop->memoryBusWidth = 6144;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  if (cuda_emu::ProhibitedDuringCapture("cudaDeviceSynchronize")) {
    return cudaErrorStreamCaptureUnsupported;
  }
  cuda_emu::RunAllQueued(/*blocking_only=*/false);
  return State().sticky;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(State().mu);
  *total_bytes = cuda_emu::DeviceMemoryBytes();
  *free_bytes = *total_bytes - std::min(*total_bytes, State().device_bytes_in_use);
  return cudaSuccess;
}

// ---- Memory -----------------------------------------------------------------------------
namespace {
cudaError_t Allocate(void** ptr, size_t bytes, cuda_emu::MemoryKind kind) {
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  auto& s = State();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (kind == cuda_emu::MemoryKind::kDevice &&
        s.device_bytes_in_use + bytes > cuda_emu::DeviceMemoryBytes()) {
      return SetError(cudaErrorMemoryAllocation);
    }
  }
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes) != 0) return SetError(cudaErrorMemoryAllocation);
  // Fresh device memory reads as NaN / -1 until written.
  std::memset(p, 0xff, bytes);
  std::lock_guard<std::mutex> lock(s.mu);
  s.allocations[reinterpret_cast<uintptr_t>(p)] = {bytes, kind};
  if (kind == cuda_emu::MemoryKind::kDevice) s.device_bytes_in_use += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t Release(void* ptr, cuda_emu::MemoryKind kind, const char* call) {
  if (ptr == nullptr) return cudaSuccess;
  auto& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  const auto it = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.allocations.end() || it->second.kind != kind) {
    return Misuse(cudaErrorInvalidValue,
                  std::string(call) + " of a pointer it did not allocate (or freed twice)");
  }
  if (kind == cuda_emu::MemoryKind::kDevice) s.device_bytes_in_use -= it->second.bytes;
  s.allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

// Checks the pointers of a copy against its kind: device sides inside one device allocation,
// host sides outside device memory.
cudaError_t CheckCopy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                      const char* call) {
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault) {
    if (!cuda_emu::IsDeviceRange(dst, bytes) && cuda_emu::IsDeviceRange(dst, 0)) {
      return Misuse(cudaErrorInvalidValue, std::string(call) + ": destination overruns its allocation");
    }
    if (!cuda_emu::IsDeviceRange(src, bytes) && cuda_emu::IsDeviceRange(src, 0)) {
      return Misuse(cudaErrorInvalidValue, std::string(call) + ": source overruns its allocation");
    }
    return cudaSuccess;
  }
  if (dst_device && !cuda_emu::IsDeviceMemory(dst, bytes)) {
    return Misuse(cudaErrorInvalidValue,
                  std::string(call) + ": destination of " + std::to_string(bytes) +
                      " bytes is not inside one device allocation");
  }
  if (src_device && !cuda_emu::IsDeviceMemory(src, bytes)) {
    return Misuse(cudaErrorInvalidValue,
                  std::string(call) + ": source of " + std::to_string(bytes) +
                      " bytes is not inside one device allocation");
  }
  if (!dst_device && cuda_emu::IsDeviceMemory(dst, 0)) {
    return Misuse(cudaErrorInvalidValue, std::string(call) + ": host destination is device memory");
  }
  if (!src_device && cuda_emu::IsDeviceMemory(src, 0)) {
    return Misuse(cudaErrorInvalidValue, std::string(call) + ": host source is device memory");
  }
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (cuda_emu::ProhibitedDuringCapture("cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
  return Allocate(ptr, bytes, cuda_emu::MemoryKind::kDevice);
}
cudaError_t cudaFree(void* ptr) {
  if (cuda_emu::ProhibitedDuringCapture("cudaFree")) return cudaErrorStreamCaptureUnsupported;
  cuda_emu::RunAllQueued(/*blocking_only=*/false);  // cudaFree synchronizes the device
  return Release(ptr, cuda_emu::MemoryKind::kDevice, "cudaFree");
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned /*flags*/) {
  return Allocate(ptr, bytes, cuda_emu::MemoryKind::kPinnedHost);
}
cudaError_t cudaFreeHost(void* ptr) {
  cuda_emu::RunAllQueued(/*blocking_only=*/false);  // as cudaFree
  return Release(ptr, cuda_emu::MemoryKind::kPinnedHost, "cudaFreeHost");
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  if (attributes == nullptr) return Misuse(cudaErrorInvalidValue, "cudaPointerGetAttributes: null");
  cuda_emu::RuntimeState& s = cuda_emu::State();
  std::lock_guard<std::mutex> lock(s.mu);
  const cuda_emu::Allocation* a = cuda_emu::FindAllocation(ptr, 0, nullptr);
  // As CUDA 11+: ordinary host memory is "unregistered", not an error.
  *attributes = {cudaMemoryTypeUnregistered, -1, nullptr, nullptr};
  if (a == nullptr) return cudaSuccess;
  attributes->device = 0;
  if (a->kind == cuda_emu::MemoryKind::kDevice) {
    attributes->type = cudaMemoryTypeDevice;
    attributes->devicePointer = const_cast<void*>(ptr);
  } else {
    attributes->type = cudaMemoryTypeHost;
    attributes->devicePointer = const_cast<void*>(ptr);  // mapped, as with unified addressing
    attributes->hostPointer = const_cast<void*>(ptr);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (cuda_emu::ProhibitedDuringCapture("cudaMemcpy")) return cudaErrorStreamCaptureUnsupported;
  const cudaError_t err = CheckCopy(dst, src, bytes, kind, "cudaMemcpy");
  if (err != cudaSuccess) return err;
  // The legacy stream: after the work of blocking streams, not of cudaStreamNonBlocking ones.
  cuda_emu::RunAllQueued(/*blocking_only=*/true);
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  const cudaError_t err = CheckCopy(dst, src, bytes, kind, "cudaMemcpyAsync");
  if (err != cudaSuccess) return err;
  CUstream_st* s = cuda_emu::RealStream(stream);
  if (bytes > 0 && s != nullptr && !s->capturing && cuda_emu::DeferredStreams()) {
    // Pageable host memory, as CUDA documents it: a destination is written before the call
    // returns (it waits for the stream); a source is read at the call (staged by the driver).
    if (cuda_emu::IsPageableHostMemory(dst)) {
      cuda_emu::RunQueued(s);
      std::memmove(dst, src, bytes);
      return cudaSuccess;
    }
    if (cuda_emu::IsPageableHostMemory(src)) {
      const auto* from = static_cast<const unsigned char*>(src);
      auto staged = std::make_shared<const std::vector<unsigned char>>(from, from + bytes);
      return SetError(cuda_emu::RunOnStream(
          stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); },
          "cudaMemcpyAsync"));
    }
  }
  return SetError(cuda_emu::RunOnStream(
      stream, [dst, src, bytes] { if (bytes > 0) std::memmove(dst, src, bytes); },
      "cudaMemcpyAsync"));
}
cudaError_t cudaMemcpyBatchAsync(void* const* dsts, const void* const* srcs, const size_t* sizes,
                                 size_t count, cudaMemcpyAttributes* attrs, size_t* attrsIdxs,
                                 size_t numAttrs, cudaStream_t stream) {
  constexpr const char* kCall = "cudaMemcpyBatchAsync";
  if (cuda_emu::IsLegacyStream(stream)) {
    return Misuse(cudaErrorInvalidValue, std::string(kCall) + " on the legacy default stream");
  }
  if (count == 0 || dsts == nullptr || srcs == nullptr || sizes == nullptr || attrs == nullptr ||
      attrsIdxs == nullptr || numAttrs == 0 || numAttrs > count) {
    return Misuse(cudaErrorInvalidValue, std::string(kCall) + ": empty or missing arrays, or " +
                                             std::to_string(numAttrs) + " attributes for " +
                                             std::to_string(count) + " copies");
  }
  for (size_t k = 0; k < numAttrs; ++k) {
    const bool in_order = k == 0 ? attrsIdxs[0] == 0 : attrsIdxs[k] > attrsIdxs[k - 1];
    if (!in_order || attrsIdxs[k] >= count) {
      return Misuse(cudaErrorInvalidValue,
                    std::string(kCall) + ": attrsIdxs must start at 0 and increase below count");
    }
    const cudaMemcpySrcAccessOrder order = attrs[k].srcAccessOrder;
    if (order != cudaMemcpySrcAccessOrderStream && order != cudaMemcpySrcAccessOrderDuringApiCall &&
        order != cudaMemcpySrcAccessOrderAny) {
      return Misuse(cudaErrorInvalidValue, std::string(kCall) + ": attribute " + std::to_string(k) +
                                               " has no valid srcAccessOrder");
    }
  }
  // The copies of a batch run in no set order: one that writes where another reads or writes
  // is undefined. Ranges sorted by start; each must begin after every earlier range it
  // conflicts with has ended.
  struct Range {
    uintptr_t begin, end;
    bool writes;
    size_t copy;
  };
  std::vector<Range> ranges;
  for (size_t i = 0; i < count; ++i) {
    const cudaError_t err = CheckCopy(dsts[i], srcs[i], sizes[i], cudaMemcpyDefault, kCall);
    if (err != cudaSuccess) return err;
    if (sizes[i] == 0) continue;
    const auto d = reinterpret_cast<uintptr_t>(dsts[i]);
    const auto r = reinterpret_cast<uintptr_t>(srcs[i]);
    ranges.push_back({d, d + sizes[i], true, i});
    ranges.push_back({r, r + sizes[i], false, i});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  uintptr_t end_any = 0, end_write = 0;
  size_t copy_any = 0, copy_write = 0;
  for (const Range& r : ranges) {
    const bool conflict = r.writes ? r.begin < end_any : r.begin < end_write;
    if (conflict) {
      const size_t other = r.writes && r.begin < end_any ? copy_any : copy_write;
      return Misuse(cudaErrorInvalidValue,
                    std::string(kCall) + ": copies " + std::to_string(other) + " and " +
                        std::to_string(r.copy) +
                        " of one batch overlap where one writes (their order is undefined)");
    }
    if (r.end > end_any) end_any = r.end, copy_any = r.copy;
    if (r.writes && r.end > end_write) end_write = r.end, copy_write = r.copy;
  }
  // One stream operation. Sources read at the call (staged) where the attribute says so or
  // the memory is pageable, as cudaMemcpyAsync's; pageable destinations: the whole batch now,
  // once the stream's earlier work has run.
  struct Copy {
    void* dst;
    const void* src;
    size_t bytes;
  };
  auto copies = std::make_shared<std::vector<Copy>>();
  auto staged = std::make_shared<std::vector<std::vector<unsigned char>>>();
  staged->reserve(count);
  bool pageable_dst = false;
  size_t attr = 0;
  for (size_t i = 0; i < count; ++i) {
    while (attr + 1 < numAttrs && attrsIdxs[attr + 1] <= i) ++attr;
    if (sizes[i] == 0) continue;
    const void* src = srcs[i];
    if (attrs[attr].srcAccessOrder == cudaMemcpySrcAccessOrderDuringApiCall ||
        cuda_emu::IsPageableHostMemory(src)) {
      const auto* from = static_cast<const unsigned char*>(src);
      staged->emplace_back(from, from + sizes[i]);
      src = staged->back().data();
    }
    pageable_dst = pageable_dst || cuda_emu::IsPageableHostMemory(dsts[i]);
    copies->push_back({dsts[i], src, sizes[i]});
  }
  auto run = [copies, staged] {
    for (const Copy& c : *copies) std::memcpy(c.dst, c.src, c.bytes);
  };
  CUstream_st* s = cuda_emu::RealStream(stream);
  if (pageable_dst && s != nullptr && !s->capturing && cuda_emu::DeferredStreams()) {
    cuda_emu::RunQueued(s);
    run();
    return cudaSuccess;
  }
  return SetError(cuda_emu::RunOnStream(stream, std::move(run), kCall));
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (cuda_emu::ProhibitedDuringCapture("cudaMemset")) return cudaErrorStreamCaptureUnsupported;
  if (!cuda_emu::IsDeviceMemory(dst, bytes)) {
    return Misuse(cudaErrorInvalidValue, "cudaMemset of " + std::to_string(bytes) +
                                             " bytes outside one device allocation");
  }
  cuda_emu::RunAllQueued(/*blocking_only=*/true);  // the legacy stream, as cudaMemcpy
  std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (!cuda_emu::IsDeviceMemory(dst, bytes)) {
    return Misuse(cudaErrorInvalidValue, "cudaMemsetAsync of " + std::to_string(bytes) +
                                             " bytes outside one device allocation");
  }
  return SetError(cuda_emu::RunOnStream(
      stream, [dst, value, bytes] { std::memset(dst, value, bytes); }, "cudaMemsetAsync"));
}

// ---- Streams, graphs, events ------------------------------------------------------------------
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  auto* s = new CUstream_st();
  s->blocking = (flags & cudaStreamNonBlocking) == 0;
  std::lock_guard<std::mutex> lock(State().streams_mu);
  State().streams.insert(s);
  *stream = s;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  CUstream_st* s = cuda_emu::RealStream(stream);
  if (s == nullptr) return SetError(cudaErrorInvalidResourceHandle);
  if (s->capturing) {
    delete s->graph;
    if (cuda_emu::t_capturing_stream == s) cuda_emu::t_capturing_stream = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(State().streams_mu);
    cuda_emu::RunQueued(s);  // a GPU finishes a destroyed stream's work
    State().streams.erase(s);
  }
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  CUstream_st* s = cuda_emu::RealStream(stream);
  if ((s != nullptr && s->capturing) ||
      (cuda_emu::IsLegacyStream(stream) && cuda_emu::t_capturing_stream != nullptr)) {
    cuda_emu::ProhibitedDuringCapture("cudaStreamSynchronize");
    return cudaErrorStreamCaptureUnsupported;
  }
  if (s != nullptr) {
    cuda_emu::RunQueued(s);
  } else if (cuda_emu::IsLegacyStream(stream)) {
    cuda_emu::RunAllQueued(/*blocking_only=*/true);
  }
  return State().sticky;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode /*mode*/) {
  CUstream_st* s = cuda_emu::RealStream(stream);
  if (s == nullptr) {
    return Misuse(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture on the legacy stream");
  }
  if (s->capturing || cuda_emu::t_capturing_stream != nullptr) {
    return Misuse(cudaErrorInvalidValue, "cudaStreamBeginCapture while a capture is in progress");
  }
  s->capturing = true;
  s->invalidated = false;
  s->capture_thread = std::this_thread::get_id();
  s->graph = new CUgraph_st();
  cuda_emu::t_capturing_stream = s;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  CUstream_st* s = cuda_emu::RealStream(stream);
  if (s == nullptr || !s->capturing) {
    return Misuse(cudaErrorInvalidValue, "cudaStreamEndCapture on a stream that is not capturing");
  }
  s->capturing = false;
  cuda_emu::t_capturing_stream = nullptr;
  if (s->invalidated) {
    delete s->graph;
    s->graph = nullptr;
    *graph = nullptr;
    return SetError(cudaErrorStreamCaptureInvalidated);
  }
  *graph = s->graph;
  s->graph = nullptr;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  CUstream_st* s = cuda_emu::RealStream(stream);
  *status = s != nullptr && s->capturing
                ? (s->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive)
                : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long /*flags*/) {
  if (graph == nullptr) return SetError(cudaErrorInvalidValue);
  *exec =
      new CUgraphExec_st{std::make_shared<const std::vector<std::function<void()>>>(graph->nodes)};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return SetError(cudaErrorInvalidValue);
  std::shared_ptr<const std::vector<std::function<void()>>> nodes = exec->nodes;
  return SetError(cuda_emu::RunOnStream(
      stream,
      [nodes] {
        for (const auto& node : *nodes) node();
      },
      "cudaGraphLaunch"));
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st();
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned /*flags*/) {
  return cudaEventCreate(event);
}
namespace {
// Deferred streams: runs the stream an event was last recorded on up to that record.
void RunUpToEvent(cudaEvent_t event) {
  CUstream_st* s = event->stream;
  if (s == nullptr) return;
  std::lock_guard<std::mutex> lock(State().streams_mu);
  if (State().streams.count(s) == 0) return;  // destroyed: its work has run
  cuda_emu::RunQueued(s, event->position);
}
}  // namespace

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (event != nullptr) RunUpToEvent(event);  // its queued record refers to it
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (event == nullptr) return SetError(cudaErrorInvalidResourceHandle);
  const cudaError_t err = SetError(cuda_emu::RunOnStream(
      stream,
      [event] {
        event->time = std::chrono::steady_clock::now();
        event->recorded = true;
      },
      "cudaEventRecord"));
  CUstream_st* s = cuda_emu::RealStream(stream);
  event->stream = nullptr;
  if (err == cudaSuccess && s != nullptr && !s->capturing && cuda_emu::DeferredStreams()) {
    std::lock_guard<std::mutex> lock(s->queue_mu);
    event->stream = s;
    event->position = s->enqueued;  // the record just queued
  }
  return err;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (cuda_emu::ProhibitedDuringCapture("cudaEventSynchronize")) {
    return cudaErrorStreamCaptureUnsupported;
  }
  if (event == nullptr) return SetError(cudaErrorInvalidResourceHandle);
  RunUpToEvent(event);
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (start == nullptr || end == nullptr || !start->recorded || !end->recorded) {
    return SetError(cudaErrorInvalidResourceHandle);
  }
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (func == nullptr) return SetError(cudaErrorInvalidValue);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > cuda_emu::kMaxDynamicSmemOptin) {
      return Misuse(cudaErrorInvalidValue,
                    "cudaFuncSetAttribute(MaxDynamicSharedMemorySize, " + std::to_string(value) +
                        "): more than the device's " +
                        std::to_string(cuda_emu::kMaxDynamicSmemOptin) + " bytes");
    }
    std::lock_guard<std::mutex> lock(State().mu);
    State().dynamic_smem_limits[func] = static_cast<size_t>(value);
  }
  return cudaSuccess;
}
