#include "server/chunk_merge.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace glimpse::server {
namespace {

// Appends `from` (a later Chunk of the same completion) to `into`.
void AppendChunk(v1::GenerateResponse::Chunk& from, v1::GenerateResponse::Chunk& into) {
  into.mutable_token_ids()->Add(from.token_ids().begin(), from.token_ids().end());
  into.mutable_text()->append(from.text());
  for (v1::TokenLogprob& logprob : *from.mutable_logprobs()) {
    *into.add_logprobs() = std::move(logprob);
  }
  if (from.has_usage()) *into.mutable_usage() = from.usage();  // cumulative: the latest
}

}  // namespace

int MergeQueuedChunks(v1::GenerateResponse& next, std::deque<v1::GenerateResponse>& queue,
                      size_t max_bytes) {
  if (!next.has_chunk() || queue.empty()) return 0;
  const uint32_t index = next.chunk().index();
  // An upper bound of the merged message's size: each merged message's request id and index
  // are counted although they are not repeated. Computed at the first match only (Pump calls
  // this whenever anything is queued, most often with nothing to merge).
  size_t bytes = 0;
  int merged = 0;
  // Compacts the queue in place: messages kept move down over the merged ones.
  auto keep = queue.begin();
  auto it = queue.begin();
  for (; it != queue.end() && it->has_chunk(); ++it) {
    if (it->chunk().index() == index) {
      if (bytes == 0) bytes = next.ByteSizeLong();
      const size_t add = it->ByteSizeLong();
      if (bytes + add > max_bytes) break;  // this one and what follows wait for the next write
      AppendChunk(*it->mutable_chunk(), *next.mutable_chunk());
      bytes += add;
      ++merged;
      continue;
    }
    if (keep != it) *keep = std::move(*it);
    ++keep;
  }
  if (merged > 0) {
    keep = std::move(it, queue.end(), keep);
    queue.erase(keep, queue.end());
  }
  return merged;
}

}  // namespace glimpse::server
