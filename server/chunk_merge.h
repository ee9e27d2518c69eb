// Merging a Generate call's queued Chunk messages while a write is in flight.
//
// A call's responses queue up while gRPC writes the previous one (a slow client, a busy
// machine, or steps faster than a write's round trip). Sending them one by one then costs a
// write per token and keeps the client behind; instead, the message about to be written
// takes in the queued Chunks of its completion: token ids, text and logprobs concatenated,
// the latest cumulative usage. What a client reconstructs per completion is unchanged: only
// how it is split into messages. A message never passes the queue's PromptInfo or Complete
// messages, nor another completion's Chunk of the same index (n > 1 calls interleave theirs;
// a completion's own order is kept).
//
// Thread-safety: none (the caller holds the call's lock).
#ifndef GLIMPSE_SERVER_CHUNK_MERGE_H_
#define GLIMPSE_SERVER_CHUNK_MERGE_H_

#include <cstddef>
#include <deque>

#include "proto/glimpse/v1/engine.pb.h"

namespace glimpse::server {

// Below gRPC's default 4 MiB limit on a message a client receives, with room to spare.
inline constexpr size_t kMaxMergedChunkBytes = size_t{1} << 20;

// If `next` is a Chunk, moves into it the Chunks of the same index that `queue` holds before
// its first message of another kind, while the merged message stays within `max_bytes`
// (serialized). Chunks of other indices stay queued, in their order. Returns how many
// messages were merged into `next`.
int MergeQueuedChunks(v1::GenerateResponse& next, std::deque<v1::GenerateResponse>& queue,
                      size_t max_bytes = kMaxMergedChunkBytes);

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_CHUNK_MERGE_H_
