// A `glimpse` child process for end-to-end tests: started with arguments, ready once it
// prints its "<marker>HOST:PORT" line on stdout, killed (SIGKILL) on destruction if still
// running. Not thread-safe; one test thread drives it.
#ifndef GLIMPSE_TESTS_CHILD_PROCESS_H_
#define GLIMPSE_TESTS_CHILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Runs `args` (args[0] the binary, relative to the runfiles root) and waits up to 60 s for
  // a stdout line starting with `marker` and ending in ":PORT"; port() is then that port.
  ::testing::AssertionResult Start(std::vector<std::string> args, const std::string& marker);
  int port() const { return port_; }
  void Signal(int sig) const;
  // The exit code (128 + signal when killed), or -1 if still running after `timeout`.
  int WaitExit(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int port_ = 0;
};

// A free loopback TCP port (bound and released; good enough for a test).
int FreePort();

}  // namespace glimpse::testing

#endif  // GLIMPSE_TESTS_CHILD_PROCESS_H_
