#include "kernels/host_buffer.h"

#include <cstdint>
#include <numeric>

#include "gtest/gtest.h"
#include "kernels/cpu/testing/instrumented_cpu_backend.h"

namespace glimpse::kernels {
namespace {

using CountingBackend = cpu::InstrumentedCpuBackend;

TEST(HostBufferTest, MemoryComesFromTheBackendAndGoesBack) {
  CountingBackend backend;
  {
    HostBuffer<float> buffer;
    buffer.SetBackend(&backend);
    buffer.Resize(1000);
    ASSERT_EQ(backend.num_live(), 1u);
    EXPECT_TRUE(backend.Holds(buffer.data(), 1000 * sizeof(float)));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.data()) % 64, 0u);
  }
  EXPECT_EQ(backend.num_live(), 0u) << "the destructor frees through the backend";
}

TEST(HostBufferTest, ResizeKeepsTheContentsAndGrowsGeometrically) {
  CountingBackend backend;
  HostBuffer<int32_t> buffer;
  buffer.SetBackend(&backend);
  buffer.Resize(100);
  std::iota(buffer.data(), buffer.data() + 100, 0);
  buffer.Resize(101);  // grows: a new allocation, the old one freed
  EXPECT_GE(buffer.capacity(), 150u);
  EXPECT_EQ(backend.num_live(), 1u);
  for (int32_t i = 0; i < 100; ++i) ASSERT_EQ(buffer.data()[i], i);
  const int before = backend.num_allocations();
  buffer.Clear();
  EXPECT_EQ(buffer.size(), 0u);
  buffer.Resize(150);  // within the capacity: no allocation
  EXPECT_EQ(backend.num_allocations(), before);
  EXPECT_EQ(buffer.span().size(), 150u);
  buffer.Resize(10);
  EXPECT_EQ(buffer.data()[9], 9) << "shrinking keeps what stays";
}

TEST(HostBufferTest, ReserveAllocatesOnceForEverySizeUpToIt) {
  CountingBackend backend;
  HostBuffer<int32_t> buffer;
  buffer.SetBackend(&backend);
  buffer.Resize(3);
  std::iota(buffer.data(), buffer.data() + 3, 7);
  buffer.Reserve(1000);
  EXPECT_EQ(buffer.size(), 3u) << "reserving keeps the size";
  EXPECT_EQ(buffer.capacity(), 1000u);
  EXPECT_EQ(backend.num_live(), 1u);
  for (int32_t i = 0; i < 3; ++i) ASSERT_EQ(buffer.data()[i], 7 + i) << "and the contents";
  const int after_reserve = backend.num_allocations();
  for (size_t n : {10u, 999u, 1000u, 500u}) buffer.Resize(n);
  EXPECT_EQ(backend.num_allocations(), after_reserve) << "no size up to the reserve allocates";
  buffer.Reserve(10);  // below the capacity: nothing
  EXPECT_EQ(buffer.capacity(), 1000u);
  EXPECT_EQ(backend.num_allocations(), after_reserve);
  EXPECT_TRUE(backend.Holds(buffer.data(), 1000 * sizeof(int32_t)));
}

TEST(HostBufferTest, ChangingTheBackendFreesThroughTheOldOne) {
  CountingBackend a;
  CountingBackend b;
  HostBuffer<float> buffer;
  buffer.SetBackend(&a);
  buffer.Resize(10);
  buffer.SetBackend(&a);  // the same: nothing happens
  EXPECT_EQ(buffer.size(), 10u);
  buffer.SetBackend(&b);
  EXPECT_EQ(a.num_live(), 0u);
  EXPECT_EQ(buffer.size(), 0u);
  buffer.Resize(5);
  EXPECT_EQ(b.num_live(), 1u);
  buffer.SetBackend(nullptr);  // plain memory from here on
  EXPECT_EQ(b.num_live(), 0u);
  buffer.Resize(7);
  EXPECT_NE(buffer.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.data()) % 64, 0u);
}

// A backend that cannot page-lock more (AllocateHost null): plain memory, freed as such (the
// backend aborts on a FreeHost of memory it did not give).
TEST(HostBufferTest, FallsBackToPlainMemoryWhenTheBackendRefuses) {
  CountingBackend backend;
  backend.set_refuse_host_allocations(true);
  HostBuffer<float> buffer;
  buffer.SetBackend(&backend);
  buffer.Resize(100);
  ASSERT_NE(buffer.data(), nullptr);
  EXPECT_FALSE(buffer.from_backend());
  buffer.data()[99] = 1.5f;
  backend.set_refuse_host_allocations(false);
  buffer.Resize(1000);  // grows into the backend's memory, the plain block freed as plain
  EXPECT_TRUE(buffer.from_backend());
  EXPECT_EQ(buffer.data()[99], 1.5f);
  backend.set_refuse_host_allocations(true);
  buffer.Resize(10000);  // and back
  EXPECT_FALSE(buffer.from_backend());
  EXPECT_EQ(backend.num_live(), 0u);
  EXPECT_EQ(buffer.data()[99], 1.5f);
}

TEST(HostBufferTest, MovingHandsTheMemoryOver) {
  CountingBackend backend;
  HostBuffer<float> a;
  a.SetBackend(&backend);
  a.Resize(8);
  float* data = a.data();
  HostBuffer<float> b = std::move(a);
  EXPECT_EQ(b.data(), data);
  EXPECT_EQ(b.backend(), &backend);
  EXPECT_EQ(a.data(), nullptr);
  b = HostBuffer<float>();
  EXPECT_EQ(backend.num_live(), 0u);
}

}  // namespace
}  // namespace glimpse::kernels
