// NCCL's all-reduce on the CPU for emulated builds (include/nccl.h).
//
// The ranks of one ncclCommInitAll share a Clique. An all-reduce runs on its stream like any
// emulated work (so a capturing stream records it and a graph replay performs it): each rank
// deposits its buffers and waits until every rank has, then the last to arrive sums them in rank
// order and every rank returns. Calls between ncclGroupStart and ncclGroupEnd are held and then
// run on a thread each, so that one host thread can drive all ranks as with real NCCL (calls on
// a capturing stream are recorded at once, grouped or not).
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/cuda/emulation/include/cuda_bf16.h"
#include "kernels/cuda/emulation/include/nccl.h"
#include "kernels/cuda/emulation/launch.h"

namespace {

struct Clique {
  explicit Clique(int n) : size(n), send(n), recv(n) {}
  const int size;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t generation = 0;
  int arrived = 0;
  size_t count = 0;
  ncclDataType_t type = ncclFloat32;
  bool mismatch = false;
  std::vector<const void*> send;
  std::vector<void*> recv;
};

float LoadElement(const void* base, ncclDataType_t type, size_t i) {
  return type == ncclFloat32 ? static_cast<const float*>(base)[i]
                             : __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
}

void StoreElement(void* base, ncclDataType_t type, size_t i, float v) {
  if (type == ncclFloat32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v);
  }
}

// Blocks until every rank of the clique has called it for this round; the last one reduces.
void Rendezvous(Clique& c, int rank, const void* send, void* recv, size_t count,
                ncclDataType_t type) {
  std::unique_lock<std::mutex> lock(c.mu);
  const uint64_t round = c.generation;
  if (c.arrived == 0) {
    c.count = count;
    c.type = type;
    c.mismatch = false;
  } else if (c.count != count || c.type != type) {
    c.mismatch = true;
  }
  c.send[rank] = send;
  c.recv[rank] = recv;
  if (++c.arrived < c.size) {
    c.cv.wait(lock, [&] { return c.generation != round; });
    return;
  }
  if (c.mismatch) {
    std::fprintf(stderr, "CUDA emulation: ncclAllReduce ranks disagree on count or type\n");
    std::abort();
  }
  std::vector<float> sum(c.count, 0.0f);
  for (int r = 0; r < c.size; ++r) {
    for (size_t i = 0; i < c.count; ++i) sum[i] += LoadElement(c.send[r], c.type, i);
  }
  for (int r = 0; r < c.size; ++r) {
    for (size_t i = 0; i < c.count; ++i) StoreElement(c.recv[r], c.type, i, sum[i]);
  }
  c.arrived = 0;
  ++c.generation;
  c.cv.notify_all();
}

thread_local int t_group_depth = 0;
thread_local std::vector<std::function<void()>> t_group_calls;

}  // namespace

struct ncclComm {
  std::shared_ptr<Clique> clique;
  int rank = 0;
};

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  if (comms == nullptr || ndev <= 0) return ncclInvalidArgument;
  int devices = 0;
  cudaGetDeviceCount(&devices);
  for (int i = 0; i < ndev; ++i) {
    const int d = devlist != nullptr ? devlist[i] : i;
    if (d < 0 || d >= devices) return ncclInvalidArgument;
  }
  auto clique = std::make_shared<Clique>(ndev);
  for (int i = 0; i < ndev; ++i) comms[i] = new ncclComm{clique, i};
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  if (comm == nullptr || op != ncclSum ||
      (datatype != ncclFloat32 && datatype != ncclBfloat16) ||
      (count > 0 && (sendbuff == nullptr || recvbuff == nullptr))) {
    return ncclInvalidArgument;
  }
  std::shared_ptr<Clique> clique = comm->clique;
  const int rank = comm->rank;
  auto call = [clique, rank, sendbuff, recvbuff, count, datatype] {
    Rendezvous(*clique, rank, sendbuff, recvbuff, count, datatype);
  };
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(stream, &capture);
  if (t_group_depth > 0 && capture == cudaStreamCaptureStatusNone) {
    t_group_calls.push_back(
        [call, stream] { cuda_emu::RunOnStreamNow(stream, call, "ncclAllReduce"); });
    return ncclSuccess;
  }
  return cuda_emu::RunOnStreamNow(stream, call, "ncclAllReduce") == cudaSuccess ? ncclSuccess
                                                                                : ncclInvalidUsage;
}

ncclResult_t ncclGroupStart() {
  ++t_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_group_depth == 0) return ncclInvalidUsage;
  if (--t_group_depth > 0) return ncclSuccess;
  std::vector<std::function<void()>> calls;
  calls.swap(t_group_calls);
  std::vector<std::thread> threads;
  threads.reserve(calls.size());
  for (auto& call : calls) threads.emplace_back(std::move(call));
  for (std::thread& t : threads) t.join();
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
  }
  return "unknown result";
}
