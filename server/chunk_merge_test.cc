#include "server/chunk_merge.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::server {
namespace {

using Response = v1::GenerateResponse;

Response Chunk(uint32_t index, std::vector<uint32_t> ids, std::string text,
               int completion_tokens = -1) {
  Response r;
  r.set_request_id("req");
  v1::GenerateResponse::Chunk* c = r.mutable_chunk();
  c->set_index(index);
  for (uint32_t id : ids) {
    c->add_token_ids(id);
    v1::TokenLogprob* lp = c->add_logprobs();
    lp->set_token_id(id);
    lp->set_logprob(-0.25f * static_cast<float>(id));
  }
  c->set_text(std::move(text));
  if (completion_tokens >= 0) c->mutable_usage()->set_completion_tokens(completion_tokens);
  return r;
}

Response Complete(uint32_t index) {
  Response r;
  r.set_request_id("req");
  r.mutable_complete()->set_index(index);
  return r;
}

std::vector<uint32_t> Ids(const Response& r) {
  return {r.chunk().token_ids().begin(), r.chunk().token_ids().end()};
}

std::vector<uint32_t> LogprobIds(const Response& r) {
  std::vector<uint32_t> ids;
  for (const v1::TokenLogprob& lp : r.chunk().logprobs()) ids.push_back(lp.token_id());
  return ids;
}

TEST(ChunkMergeTest, QueuedChunksOfTheCompletionJoinTheNextWrite) {
  Response next = Chunk(0, {1, 2}, "ab", 2);
  std::deque<Response> queue = {Chunk(0, {3}, "c", 3), Chunk(0, {}, "d"),
                                Chunk(0, {4, 5}, "ef", 5)};
  EXPECT_EQ(MergeQueuedChunks(next, queue), 3);
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(Ids(next), (std::vector<uint32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(LogprobIds(next), (std::vector<uint32_t>{1, 2, 3, 4, 5}));
  EXPECT_FLOAT_EQ(next.chunk().logprobs(4).logprob(), -1.25f);
  EXPECT_EQ(next.chunk().text(), "abcdef");
  EXPECT_EQ(next.chunk().usage().completion_tokens(), 5u) << "the latest cumulative usage";
  EXPECT_EQ(next.request_id(), "req");
}

TEST(ChunkMergeTest, UsageStaysWhenLaterChunksCarryNone) {
  Response next = Chunk(0, {1}, "a", 1);
  std::deque<Response> queue = {Chunk(0, {2}, "b")};
  EXPECT_EQ(MergeQueuedChunks(next, queue), 1);
  EXPECT_EQ(next.chunk().usage().completion_tokens(), 1u);
}

TEST(ChunkMergeTest, StopsAtTheFirstMessageThatIsNotAChunk) {
  Response next = Chunk(0, {1}, "a");
  std::deque<Response> queue = {Chunk(0, {2}, "b"), Complete(0), Chunk(1, {9}, "z"),
                                Chunk(0, {3}, "c")};
  EXPECT_EQ(MergeQueuedChunks(next, queue), 1);
  ASSERT_EQ(queue.size(), 3u);
  EXPECT_TRUE(queue[0].has_complete());
  EXPECT_EQ(Ids(queue[1]), (std::vector<uint32_t>{9}));
  EXPECT_EQ(Ids(queue[2]), (std::vector<uint32_t>{3}));
  EXPECT_EQ(Ids(next), (std::vector<uint32_t>{1, 2}));
}

TEST(ChunkMergeTest, OtherCompletionsChunksStayQueuedInOrder) {
  Response next = Chunk(0, {1}, "a");
  std::deque<Response> queue = {Chunk(1, {10}, "x"), Chunk(0, {2}, "b"), Chunk(2, {20}, "y"),
                                Chunk(1, {11}, "z"), Chunk(0, {3}, "c")};
  EXPECT_EQ(MergeQueuedChunks(next, queue), 2);
  EXPECT_EQ(Ids(next), (std::vector<uint32_t>{1, 2, 3}));
  ASSERT_EQ(queue.size(), 3u);
  EXPECT_EQ(queue[0].chunk().index(), 1u);
  EXPECT_EQ(Ids(queue[0]), (std::vector<uint32_t>{10}));
  EXPECT_EQ(queue[1].chunk().index(), 2u);
  EXPECT_EQ(queue[2].chunk().index(), 1u);
  EXPECT_EQ(Ids(queue[2]), (std::vector<uint32_t>{11}));
}

TEST(ChunkMergeTest, TheSizeCapLeavesTheRestInOrder) {
  Response next = Chunk(0, {1}, std::string(100, 'a'));
  std::deque<Response> queue = {Chunk(0, {2}, std::string(100, 'b')), Chunk(1, {7}, "x"),
                                Chunk(0, {3}, std::string(100, 'c')),
                                Chunk(0, {4}, std::string(10, 'd'))};
  const size_t cap = next.ByteSizeLong() + queue[0].ByteSizeLong() + 50;
  EXPECT_EQ(MergeQueuedChunks(next, queue, cap), 1);
  EXPECT_LE(next.ByteSizeLong(), cap);
  EXPECT_EQ(next.chunk().text(), std::string(100, 'a') + std::string(100, 'b'));
  // The chunk that did not fit waits, and so does every later one of the completion.
  ASSERT_EQ(queue.size(), 3u);
  EXPECT_EQ(Ids(queue[0]), (std::vector<uint32_t>{7}));
  EXPECT_EQ(Ids(queue[1]), (std::vector<uint32_t>{3}));
  EXPECT_EQ(Ids(queue[2]), (std::vector<uint32_t>{4}));
}

TEST(ChunkMergeTest, OnlyChunksTakeOthersIn) {
  Response prompt;
  prompt.mutable_prompt()->set_prompt_tokens(4);
  std::deque<Response> queue = {Chunk(0, {1}, "a")};
  EXPECT_EQ(MergeQueuedChunks(prompt, queue), 0);
  Response complete = Complete(0);
  EXPECT_EQ(MergeQueuedChunks(complete, queue), 0);
  EXPECT_EQ(queue.size(), 1u);
  std::deque<Response> empty;
  Response next = Chunk(0, {1}, "a");
  EXPECT_EQ(MergeQueuedChunks(next, empty), 0);
  EXPECT_EQ(Ids(next), (std::vector<uint32_t>{1}));
}

}  // namespace
}  // namespace glimpse::server
