// main() of every kernels/cuda test binary: runs the tests linked into it.
#include "kernels/cuda/testing/test_harness.h"

int main(int argc, char** argv) {
  return glimpse::kernels::cuda::testing::RunAllTests(argc, argv);
}
