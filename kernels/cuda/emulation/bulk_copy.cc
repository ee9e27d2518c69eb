// Hopper's tensor memory accelerator (TMA) for emulated builds: the driver's
// cuTensorMapEncodeTiled (reached, as on a GPU machine, through
// cudaGetDriverEntryPointByVersion) and cp.async.bulk.tensor.2d, which copies one box of a
// tiled tensor map into shared memory and completes its bytes on an mbarrier
// (BlockRunner::BulkCopyToShared: the data lands when a thread waits on that barrier).
//
// Only what glimpse uses: rank-2 maps, element strides of 1, no interleave, no swizzle or the
// 128-byte swizzle (whose box rows must then be exactly 128 bytes). The swizzle XORs the
// 16-byte chunk index (shared address bits 4-6) with the 128-byte row index within its
// 1024-byte atom (bits 7-9) of the absolute shared address, the pattern wgmma's
// descriptors read back (tensor_core.cc). Out-of-bounds box elements are written as zeros.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/emulation/block_runner.h"
#include "kernels/cuda/emulation/include/cuda.h"

namespace cuda_emu {
namespace {

using internal::BlockRunner;

constexpr uint64_t kMagic = 0x676c696d70736554ull;  // marks a map this file encoded

// The emulator's layout of the 128 opaque bytes.
struct EncodedMap {
  uint64_t magic;
  uint64_t address;
  uint64_t element_bytes;
  uint64_t dims[2];
  uint64_t row_stride_bytes;
  uint64_t box[2];
  uint64_t swizzle;
};
static_assert(sizeof(EncodedMap) <= sizeof(CUtensorMap));

int ElementBytes(CUtensorMapDataType type) {
  switch (type) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8:
      return 1;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16:
      return 2;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
      return 4;
    default:
      return 8;
  }
}

// cuTensorMapEncodeTiled with the driver's documented checks on what glimpse passes.
CUresult EncodeTiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
                     const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                     const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                     CUtensorMapSwizzle swizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill) {
  const int element = ElementBytes(type);
  const bool ok = map != nullptr && rank == 2 && (reinterpret_cast<uintptr_t>(address) & 15) == 0 &&
                  dims[0] >= 1 && dims[1] >= 1 && dims[0] <= (1ull << 32) &&
                  dims[1] <= (1ull << 32) && strides[0] % 16 == 0 && strides[0] < (1ull << 40) &&
                  strides[0] >= dims[0] * element && box[0] >= 1 && box[0] <= 256 && box[1] >= 1 &&
                  box[1] <= 256 && (box[0] * element) % 16 == 0 && element_strides[0] == 1 &&
                  element_strides[1] == 1 && interleave == CU_TENSOR_MAP_INTERLEAVE_NONE &&
                  (swizzle == CU_TENSOR_MAP_SWIZZLE_NONE ||
                   (swizzle == CU_TENSOR_MAP_SWIZZLE_128B && box[0] * element == 128));
  if (!ok) return CUDA_ERROR_INVALID_VALUE;
  EncodedMap e{kMagic,
               reinterpret_cast<uint64_t>(address),
               static_cast<uint64_t>(element),
               {dims[0], dims[1]},
               strides[0],
               {box[0], box[1]},
               static_cast<uint64_t>(swizzle)};
  std::memset(map, 0, sizeof(*map));
  std::memcpy(map, &e, sizeof(e));
  return CUDA_SUCCESS;
}

}  // namespace

void TmaLoad2d(uint32_t smem_address, const void* tensor_map, int32_t c0, int32_t c1,
               uint32_t mbarrier) {
  BlockRunner& runner = BlockRunner::ForThisThread();
  EncodedMap m;
  std::memcpy(&m, tensor_map, sizeof(m));
  if (m.magic != kMagic) runner.Fail("cp.async.bulk.tensor with a tensor map never encoded");
  const uint64_t row_bytes = m.box[0] * m.element_bytes;
  std::vector<unsigned char> bytes(row_bytes * m.box[1], 0);
  const auto* base = reinterpret_cast<const unsigned char*>(m.address);
  for (uint64_t r = 0; r < m.box[1]; ++r) {
    const int64_t row = static_cast<int64_t>(c1) + static_cast<int64_t>(r);
    for (uint64_t chunk = 0; chunk < row_bytes / 16; ++chunk) {
      uint32_t dst = smem_address + static_cast<uint32_t>(r * row_bytes + chunk * 16);
      if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B) dst ^= ((dst >> 7) & 7u) << 4;
      unsigned char* out = bytes.data() + (dst - smem_address);
      for (int b = 0; b < 16; b += static_cast<int>(m.element_bytes)) {
        const int64_t col =
            static_cast<int64_t>(c0) + static_cast<int64_t>((chunk * 16 + b) / m.element_bytes);
        if (row < 0 || col < 0 || static_cast<uint64_t>(row) >= m.dims[1] ||
            static_cast<uint64_t>(col) >= m.dims[0]) {
          continue;  // out of bounds: stays zero
        }
        const unsigned char* src = base + row * m.row_stride_bytes + col * m.element_bytes;
        if (!InDeviceMemory(src, m.element_bytes)) {
          runner.Fail("cp.async.bulk.tensor reads outside device memory (row " +
                      std::to_string(row) + ", column " + std::to_string(col) + ")");
        }
        std::memcpy(out + b, src, m.element_bytes);
      }
    }
  }
  runner.BulkCopyToShared(smem_address, std::move(bytes), mbarrier);
}

}  // namespace cuda_emu

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** func, unsigned int,
                                             unsigned long long,
                                             cudaDriverEntryPointQueryResult* status) {
  const bool found = std::strcmp(symbol, "cuTensorMapEncodeTiled") == 0;
  *func = found ? reinterpret_cast<void*>(&cuda_emu::EncodeTiled) : nullptr;
  if (status != nullptr) {
    *status = found ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  }
  return cudaSuccess;
}
