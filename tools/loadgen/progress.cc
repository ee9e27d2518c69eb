#include "tools/loadgen/progress.h"

#include <algorithm>
#include <cstdio>

namespace glimpse::tools::loadgen {

std::string FormatProgressLine(const std::string& label, int64_t done, int64_t failed,
                               int64_t total, double elapsed_s, int bar_width) {
  const int64_t clamped = std::clamp<int64_t>(done, 0, std::max<int64_t>(total, 0));
  const int filled =
      total > 0 ? static_cast<int>(clamped * bar_width / total) : bar_width;
  std::string line = label + "  [";
  line.append(static_cast<size_t>(filled), '#');
  line.append(static_cast<size_t>(bar_width - filled), '.');
  char tail[128];
  std::snprintf(tail, sizeof(tail), "]  %lld/%lld ok %lld failed %lld  %.1f s",
                static_cast<long long>(done), static_cast<long long>(total),
                static_cast<long long>(done - failed), static_cast<long long>(failed), elapsed_s);
  return line + tail;
}

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled),
      start_(std::chrono::steady_clock::now()) {
  std::lock_guard<std::mutex> lock(mu_);
  DrawLocked(/*force=*/true);
}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::RequestDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  ++done_;
  if (!ok) ++failed_;
  DrawLocked(/*force=*/done_ == total_);
}

void ProgressBar::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (enabled_) {
    std::fprintf(stderr, "\r\033[K");  // Erase the line.
    std::fflush(stderr);
  }
}

void ProgressBar::DrawLocked(bool force) {
  if (!enabled_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::fprintf(stderr, "\r\033[K%s",
               FormatProgressLine(label_, done_, failed_, total_, elapsed, 30).c_str());
  std::fflush(stderr);
}

}  // namespace glimpse::tools::loadgen
