// A one-line progress bar for long loadgen runs, drawn on stderr (so stdout stays a clean
// table):  "c=16  [##########..........]  40/80 ok 39 failed 1  12.3 s"
// Drawn only when enabled (by default: when stderr is a terminal), at most 10 times a second,
// and erased when the level ends.
//
// Thread-safety: RequestDone may be called from any thread; Finish from the owner.
#ifndef GLIMPSE_TOOLS_LOADGEN_PROGRESS_H_
#define GLIMPSE_TOOLS_LOADGEN_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace glimpse::tools::loadgen {

// The bar's text for `done` of `total` requests (`failed` of them failed) after `elapsed_s`,
// with a bar of `bar_width` cells; no newline or carriage return.
std::string FormatProgressLine(const std::string& label, int64_t done, int64_t failed,
                               int64_t total, double elapsed_s, int bar_width);

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled);
  ~ProgressBar();  // Finish().
  void RequestDone(bool ok);
  // Erases the bar (the caller prints the level's result line instead).
  void Finish();

 private:
  void DrawLocked(bool force);

  const std::string label_;
  const int64_t total_;
  const bool enabled_;
  const std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  int64_t done_ = 0;    // Guarded by mu_.
  int64_t failed_ = 0;  // Guarded by mu_.
  std::chrono::steady_clock::time_point last_draw_;  // Guarded by mu_.
  bool finished_ = false;                            // Guarded by mu_.
};

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_PROGRESS_H_
