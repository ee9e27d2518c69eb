// The emulator's stream order (runtime.cc): work on a created stream runs when the host
// synchronizes with it, and not before, so that tests of code that reads a copy's page-locked
// destination too early, or rewrites its page-locked source too soon, fail on the CPU as they
// might on a GPU. Copies only: the order is the same for launches (RunOnStream). Run with the
// default GLIMPSE_CUDA_EMULATION_STREAMS (deferred); under `eager` these checks fail by design.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda::testing {
namespace {

constexpr size_t kBytes = 256;

std::vector<uint8_t> Pattern(uint8_t seed) {
  std::vector<uint8_t> bytes(kBytes);
  for (size_t i = 0; i < kBytes; ++i) bytes[i] = static_cast<uint8_t>(seed + 7 * i);
  return bytes;
}

bool Holds(const void* p, const std::vector<uint8_t>& bytes) {
  return std::memcmp(p, bytes.data(), bytes.size()) == 0;
}

// Device memory, page-locked host memory and a stream, freed in the destructor.
struct Fixture {
  void* device = nullptr;
  void* device2 = nullptr;
  uint8_t* pinned = nullptr;
  uint8_t* pinned2 = nullptr;
  cudaStream_t stream = nullptr;

  cudaError_t Init(unsigned stream_flags = cudaStreamNonBlocking) {
    if (cudaError_t e = cudaMalloc(&device, kBytes); e != cudaSuccess) return e;
    if (cudaError_t e = cudaMalloc(&device2, kBytes); e != cudaSuccess) return e;
    if (cudaError_t e = cudaHostAlloc(reinterpret_cast<void**>(&pinned), kBytes, 0);
        e != cudaSuccess) {
      return e;
    }
    if (cudaError_t e = cudaHostAlloc(reinterpret_cast<void**>(&pinned2), kBytes, 0);
        e != cudaSuccess) {
      return e;
    }
    std::memset(pinned, 0, kBytes);
    std::memset(pinned2, 0, kBytes);
    return cudaStreamCreateWithFlags(&stream, stream_flags);
  }
  ~Fixture() {
    if (stream != nullptr) cudaStreamDestroy(stream);
    cudaFreeHost(pinned);
    cudaFreeHost(pinned2);
    cudaFree(device);
    cudaFree(device2);
  }
  // Puts `bytes` on the device, then queues their copy back into `pinned`.
  cudaError_t QueueCopyToPinned(const std::vector<uint8_t>& bytes) {
    if (cudaError_t e = cudaMemcpy(device, bytes.data(), kBytes, cudaMemcpyHostToDevice);
        e != cudaSuccess) {
      return e;
    }
    return cudaMemcpyAsync(pinned, device, kBytes, cudaMemcpyDeviceToHost, stream);
  }
  // Device bytes, read by a synchronous copy after the stream has run.
  std::vector<uint8_t> ReadDevice(const void* from) {
    std::vector<uint8_t> out(kBytes);
    if (cudaStreamSynchronize(stream) != cudaSuccess ||
        cudaMemcpy(out.data(), from, kBytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
      out.clear();
    }
    return out;
  }
};

GLIMPSE_CUDA_TEST(APageLockedDestinationIsWrittenWhenTheHostSynchronizes) {
  Fixture f;
  GLIMPSE_ASSERT_CUDA(f.Init());
  const std::vector<uint8_t> a = Pattern(1);
  GLIMPSE_ASSERT_CUDA(f.QueueCopyToPinned(a));
  GLIMPSE_EXPECT(!Holds(f.pinned, a), "the copy landed before any synchronization");
  GLIMPSE_ASSERT_CUDA(cudaStreamSynchronize(f.stream));
  GLIMPSE_EXPECT(Holds(f.pinned, a), "cudaStreamSynchronize did not run the copy");
}

GLIMPSE_CUDA_TEST(APageLockedSourceIsReadWhenTheCopyRunsAPageableOneAtTheCall) {
  Fixture f;
  GLIMPSE_ASSERT_CUDA(f.Init());
  const std::vector<uint8_t> a = Pattern(1);
  const std::vector<uint8_t> b = Pattern(2);
  std::memcpy(f.pinned, a.data(), kBytes);
  GLIMPSE_ASSERT_CUDA(
      cudaMemcpyAsync(f.device, f.pinned, kBytes, cudaMemcpyHostToDevice, f.stream));
  std::memcpy(f.pinned, b.data(), kBytes);  // too soon: the copy has not run
  std::vector<uint8_t> pageable = a;
  GLIMPSE_ASSERT_CUDA(
      cudaMemcpyAsync(f.device2, pageable.data(), kBytes, cudaMemcpyHostToDevice, f.stream));
  pageable = b;  // allowed: the driver staged the bytes at the call
  GLIMPSE_EXPECT(Holds(f.ReadDevice(f.device).data(), b),
                 "the page-locked source was read at the call, not when the copy ran");
  GLIMPSE_EXPECT(Holds(f.ReadDevice(f.device2).data(), a),
                 "the pageable source was not read at the call");
}

GLIMPSE_CUDA_TEST(APageableDestinationIsWrittenBeforeTheCallReturnsAfterEarlierWork) {
  Fixture f;
  GLIMPSE_ASSERT_CUDA(f.Init());
  const std::vector<uint8_t> a = Pattern(3);
  std::memcpy(f.pinned, a.data(), kBytes);
  GLIMPSE_ASSERT_CUDA(
      cudaMemcpyAsync(f.device, f.pinned, kBytes, cudaMemcpyHostToDevice, f.stream));
  std::vector<uint8_t> pageable(kBytes, 0);
  GLIMPSE_ASSERT_CUDA(
      cudaMemcpyAsync(pageable.data(), f.device, kBytes, cudaMemcpyDeviceToHost, f.stream));
  GLIMPSE_EXPECT(pageable == a, "the copy into pageable memory did not wait for the stream");
}

GLIMPSE_CUDA_TEST(AnEventSynchronizationRunsTheStreamUpToTheRecordOnly) {
  Fixture f;
  GLIMPSE_ASSERT_CUDA(f.Init());
  const std::vector<uint8_t> a = Pattern(4);
  cudaEvent_t event = nullptr;
  GLIMPSE_ASSERT_CUDA(cudaEventCreate(&event));
  GLIMPSE_ASSERT_CUDA(f.QueueCopyToPinned(a));
  GLIMPSE_ASSERT_CUDA(cudaEventRecord(event, f.stream));
  GLIMPSE_ASSERT_CUDA(
      cudaMemcpyAsync(f.pinned2, f.device, kBytes, cudaMemcpyDeviceToHost, f.stream));
  GLIMPSE_ASSERT_CUDA(cudaEventSynchronize(event));
  GLIMPSE_EXPECT(Holds(f.pinned, a), "the copy before the event did not run");
  GLIMPSE_EXPECT(!Holds(f.pinned2, a), "the copy after the event ran at its synchronization");
  GLIMPSE_ASSERT_CUDA(cudaEventDestroy(event));
  GLIMPSE_ASSERT_CUDA(cudaStreamSynchronize(f.stream));
  GLIMPSE_EXPECT(Holds(f.pinned2, a), "the copy after the event never ran");
}

GLIMPSE_CUDA_TEST(LegacyStreamWorkWaitsForBlockingStreamsNotNonBlockingOnes) {
  Fixture blocking;
  Fixture non_blocking;
  GLIMPSE_ASSERT_CUDA(blocking.Init(cudaStreamDefault));
  GLIMPSE_ASSERT_CUDA(non_blocking.Init(cudaStreamNonBlocking));
  const std::vector<uint8_t> a = Pattern(5);
  GLIMPSE_ASSERT_CUDA(cudaMemcpy(blocking.device, a.data(), kBytes, cudaMemcpyHostToDevice));
  GLIMPSE_ASSERT_CUDA(cudaMemcpy(non_blocking.device, a.data(), kBytes, cudaMemcpyHostToDevice));
  GLIMPSE_ASSERT_CUDA(cudaMemcpyAsync(blocking.pinned, blocking.device, kBytes,
                                      cudaMemcpyDeviceToHost, blocking.stream));
  GLIMPSE_ASSERT_CUDA(cudaMemcpyAsync(non_blocking.pinned, non_blocking.device, kBytes,
                                      cudaMemcpyDeviceToHost, non_blocking.stream));
  GLIMPSE_ASSERT_CUDA(cudaMemset(blocking.device2, 0, kBytes));  // legacy-stream work
  GLIMPSE_EXPECT(Holds(blocking.pinned, a),
                 "legacy-stream work did not wait for a blocking stream");
  GLIMPSE_EXPECT(!Holds(non_blocking.pinned, a),
                 "legacy-stream work waited for a cudaStreamNonBlocking stream");
}

GLIMPSE_CUDA_TEST(FreeDeviceSynchronizeAndStreamDestroyRunQueuedWork) {
  const std::vector<uint8_t> a = Pattern(6);
  {
    Fixture f;
    GLIMPSE_ASSERT_CUDA(f.Init());
    GLIMPSE_ASSERT_CUDA(f.QueueCopyToPinned(a));
    GLIMPSE_ASSERT_CUDA(cudaFree(f.device2));  // synchronizes the device
    f.device2 = nullptr;
    GLIMPSE_EXPECT(Holds(f.pinned, a), "cudaFree did not run the queued copy");
  }
  {
    Fixture f;
    GLIMPSE_ASSERT_CUDA(f.Init());
    GLIMPSE_ASSERT_CUDA(f.QueueCopyToPinned(a));
    GLIMPSE_ASSERT_CUDA(cudaDeviceSynchronize());
    GLIMPSE_EXPECT(Holds(f.pinned, a), "cudaDeviceSynchronize did not run the queued copy");
  }
  {
    Fixture f;
    GLIMPSE_ASSERT_CUDA(f.Init());
    GLIMPSE_ASSERT_CUDA(f.QueueCopyToPinned(a));
    GLIMPSE_ASSERT_CUDA(cudaStreamDestroy(f.stream));
    f.stream = nullptr;
    GLIMPSE_EXPECT(Holds(f.pinned, a), "the destroyed stream's copy never ran");
  }
}

GLIMPSE_CUDA_TEST(AGraphLaunchRunsInStreamOrderAndOutlivesItsExec) {
  Fixture f;
  GLIMPSE_ASSERT_CUDA(f.Init());
  const std::vector<uint8_t> a = Pattern(7);
  GLIMPSE_ASSERT_CUDA(cudaMemcpy(f.device, a.data(), kBytes, cudaMemcpyHostToDevice));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  GLIMPSE_ASSERT_CUDA(cudaStreamBeginCapture(f.stream, cudaStreamCaptureModeThreadLocal));
  GLIMPSE_ASSERT_CUDA(
      cudaMemcpyAsync(f.pinned, f.device, kBytes, cudaMemcpyDeviceToHost, f.stream));
  GLIMPSE_ASSERT_CUDA(cudaStreamEndCapture(f.stream, &graph));
  GLIMPSE_EXPECT(!Holds(f.pinned, a), "a captured copy ran at capture");
  GLIMPSE_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  GLIMPSE_ASSERT_CUDA(cudaGraphLaunch(exec, f.stream));
  GLIMPSE_ASSERT_CUDA(cudaGraphExecDestroy(exec));  // allowed while the launch is pending
  GLIMPSE_ASSERT_CUDA(cudaGraphDestroy(graph));
  GLIMPSE_EXPECT(!Holds(f.pinned, a), "the graph ran before any synchronization");
  GLIMPSE_ASSERT_CUDA(cudaStreamSynchronize(f.stream));
  GLIMPSE_EXPECT(Holds(f.pinned, a), "the graph's copy never ran");
}

// cudaMemcpyBatchAsync with a stream-ordered source (KvCacheStorage's swaps): the whole batch
// runs in the stream's order, after what was queued before it, its page-locked sources read
// when it runs.
GLIMPSE_CUDA_TEST(ABatchOfCopiesRunsInStreamOrderReadingItsSourcesThen) {
  Fixture f;
  GLIMPSE_ASSERT_CUDA(f.Init());
  const std::vector<uint8_t> a = Pattern(8);
  GLIMPSE_ASSERT_CUDA(f.QueueCopyToPinned(a));  // queued: pinned = a
  std::memcpy(f.pinned2, a.data(), kBytes);
  void* dsts[] = {f.device2, f.pinned2};
  const void* srcs[] = {f.pinned, f.device};
  size_t sizes[] = {kBytes, kBytes};
  cudaMemcpyAttributes attributes = {};
  attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  size_t first = 0;
  GLIMPSE_ASSERT_CUDA(cudaMemcpyBatchAsync(dsts, srcs, sizes, 2, &attributes, &first, 1, f.stream));
  std::memset(f.pinned2, 0, kBytes);
  GLIMPSE_EXPECT(!Holds(f.pinned2, a), "the batch ran at the call");
  GLIMPSE_EXPECT(Holds(f.ReadDevice(f.device2).data(), a),
                 "the batch did not read what the copy queued before it wrote");
  GLIMPSE_EXPECT(Holds(f.pinned2, a), "the batch's copy to the host did not run at the sync");
}

// What CUDA refuses (cudaErrorInvalidValue), and what it leaves undefined (copies of a batch
// that overlap where one writes), refused here.
GLIMPSE_CUDA_TEST(ABatchOfCopiesIsRefusedWhereCudaRefusesItOrLeavesItUndefined) {
  Fixture f;
  GLIMPSE_ASSERT_CUDA(f.Init());
  uint8_t* device = static_cast<uint8_t*>(f.device);
  cudaMemcpyAttributes attributes = {};
  attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  size_t first = 0;
  auto batch = [&](void* d0, const void* s0, void* d1, const void* s1, cudaStream_t stream,
                   cudaMemcpyAttributes* attrs) {
    void* dsts[] = {d0, d1};
    const void* srcs[] = {s0, s1};
    size_t sizes[] = {kBytes / 2, kBytes / 2};
    const cudaError_t err = cudaMemcpyBatchAsync(dsts, srcs, sizes, 2, attrs, &first, 1, stream);
    cudaGetLastError();  // the emulator's misuse also sets the last error
    return err;
  };
  // Two halves of one allocation, each from the host: fine.
  GLIMPSE_EXPECT(
      batch(device, f.pinned, device + kBytes / 2, f.pinned2, f.stream, &attributes) == cudaSuccess,
      "disjoint copies refused");
  GLIMPSE_EXPECT(batch(device, f.pinned, device + kBytes / 4, f.pinned2, f.stream, &attributes) ==
                     cudaErrorInvalidValue,
                 "overlapping destinations accepted");
  GLIMPSE_EXPECT(
      batch(f.device2, device, device, f.pinned, f.stream, &attributes) == cudaErrorInvalidValue,
      "a copy writing another's source accepted");
  GLIMPSE_EXPECT(batch(f.pinned, device, f.pinned2, device, f.stream, &attributes) == cudaSuccess,
                 "two copies reading one source refused");
  GLIMPSE_EXPECT(batch(device, f.pinned, device + kBytes / 2, f.pinned2, nullptr, &attributes) ==
                     cudaErrorInvalidValue,
                 "the legacy stream accepted");
  cudaMemcpyAttributes unset = {};
  GLIMPSE_EXPECT(batch(device, f.pinned, device + kBytes / 2, f.pinned2, f.stream, &unset) ==
                     cudaErrorInvalidValue,
                 "an attribute without a source access order accepted");
  first = 1;
  GLIMPSE_EXPECT(batch(device, f.pinned, device + kBytes / 2, f.pinned2, f.stream, &attributes) ==
                     cudaErrorInvalidValue,
                 "attributes not starting at copy 0 accepted");
  GLIMPSE_ASSERT_CUDA(cudaStreamSynchronize(f.stream));
}

}  // namespace
}  // namespace glimpse::kernels::cuda::testing
