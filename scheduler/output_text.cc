#include "scheduler/output_text.h"

#include <algorithm>
#include <cstddef>
#include <deque>

#include "common/check.h"

namespace glimpse::scheduler {
namespace {

std::vector<int32_t> SortedUnique(std::vector<int32_t> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

model::StreamingDetokenizerOptions DetokenizerOptions(const OutputTextOptions& options) {
  model::StreamingDetokenizerOptions out;
  out.strip_leading_space = options.strip_leading_space;
  out.render_special = !options.skip_special_tokens;
  return out;
}

}  // namespace

OutputText::OutputText(const model::Tokenizer& tokenizer, OutputTextOptions options)
    : tokenizer_(tokenizer),
      options_(std::move(options)),
      eos_ids_(SortedUnique(options_.eos_token_ids.value_or(tokenizer_.end_of_generation_ids()))),
      stop_ids_(SortedUnique(options_.stop_token_ids)),
      detokenizer_(tokenizer_, DetokenizerOptions(options_)) {
  BuildAutomaton();
}

void OutputText::BuildAutomaton() {
  nodes_.assign(1, Node{});
  // The trie.
  for (size_t i = 0; i < options_.stop_strings.size(); ++i) {
    const std::string& stop = options_.stop_strings[i];
    if (stop.empty()) continue;
    int32_t node = 0;
    for (char c : stop) {
      const uint8_t byte = static_cast<uint8_t>(c);
      int32_t next = Child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        Node child;
        child.depth = nodes_[node].depth + 1;
        nodes_.push_back(std::move(child));
        auto& children = nodes_[node].children;
        children.insert(std::lower_bound(children.begin(), children.end(),
                                         std::pair<uint8_t, int32_t>(byte, -1)),
                        {byte, next});
      }
      node = next;
    }
    if (nodes_[node].pattern < 0) nodes_[node].pattern = static_cast<int32_t>(i);
  }
  // Fail links, outputs and hold depths in breadth-first order, so that a node's fail target
  // (strictly shallower) is complete before the node itself.
  std::deque<int32_t> queue;
  nodes_[0].fail = 0;
  nodes_[0].output = -1;
  nodes_[0].hold_depth = 0;
  queue.push_back(0);
  while (!queue.empty()) {
    const int32_t node = queue.front();
    queue.pop_front();
    Node& n = nodes_[node];
    if (node != 0) {
      n.output = n.pattern >= 0 ? node : nodes_[n.fail].output;
      n.hold_depth = n.children.empty() ? nodes_[n.fail].hold_depth : n.depth;
    }
    for (const auto& [byte, child] : nodes_[node].children) {
      nodes_[child].fail = node == 0 ? 0 : Step(nodes_[node].fail, byte);
      queue.push_back(child);
    }
  }
}

int32_t OutputText::Child(int32_t node, uint8_t byte) const {
  const auto& children = nodes_[node].children;
  const auto it = std::lower_bound(children.begin(), children.end(),
                                   std::pair<uint8_t, int32_t>(byte, -1));
  return it != children.end() && it->first == byte ? it->second : -1;
}

int32_t OutputText::Step(int32_t node, uint8_t byte) const {
  while (true) {
    const int32_t next = Child(node, byte);
    if (next >= 0) return next;
    if (node == 0) return 0;
    node = nodes_[node].fail;
  }
}

bool OutputText::IsEos(int32_t token) const {
  return std::binary_search(eos_ids_.begin(), eos_ids_.end(), token);
}

bool OutputText::IsStopToken(int32_t token) const {
  return std::binary_search(stop_ids_.begin(), stop_ids_.end(), token);
}

StopDecision::Kind OutputText::IdStop(int32_t token) const {
  if (num_tokens_ < options_.min_tokens) return StopDecision::Kind::kNone;
  if (!options_.ignore_eos && IsEos(token)) return StopDecision::Kind::kEos;
  if (IsStopToken(token)) return StopDecision::Kind::kStopToken;
  return StopDecision::Kind::kNone;
}

const StopDecision& OutputText::AppendDeferred(int32_t token) {
  CHECK(!finished_);
  CHECK(!has_stop_strings() && "stop strings decide on the text: call Append");
  ++num_tokens_;
  if (options_.render_text) kept_.push_back(token);
  const StopDecision::Kind token_stop = IdStop(token);
  if (token_stop != StopDecision::Kind::kNone) {
    finished_ = true;
    stop_.kind = token_stop;
    stop_.token = token;
  }
  return stop_;
}

std::string OutputText::TakeText() {
  std::string text;
  for (size_t i = 0; i < kept_.size(); ++i) {
    // Only the last kept token can have stopped the sequence (AppendDeferred takes no more).
    const bool stopping = stop_.stopped() && i + 1 == kept_.size();
    if (!stopping) {
      text.append(detokenizer_.Push(kept_[i]));
      continue;
    }
    // As Append's token-id stop (held_ is empty: no stop strings).
    if (options_.include_stop_in_output) text.append(detokenizer_.Push(kept_[i]));
    text.append(detokenizer_.Flush());
  }
  kept_.clear();
  return text;
}

AppendResult OutputText::Append(int32_t token) {
  CHECK(!finished_);
  AppendResult result;
  // Tokens AppendDeferred kept come first: none of them stopped the sequence, and there are
  // none with stop strings (so no held-back text to put them after).
  std::string kept_text = TakeText();
  ++num_tokens_;
  const bool honoured = num_tokens_ >= options_.min_tokens;

  // Token-id stops come first (as vLLM): the sequence ends whatever the token's text.
  const StopDecision::Kind token_stop = IdStop(token);
  if (token_stop != StopDecision::Kind::kNone) {
    std::string delta = std::move(kept_text);
    delta.append(held_);
    held_.clear();
    if (options_.include_stop_in_output) delta.append(detokenizer_.Push(token));
    delta.append(detokenizer_.Flush());
    finished_ = true;
    stop_.kind = token_stop;
    stop_.token = token;
    result.text = std::move(delta);
    result.stop = stop_;
    return result;
  }

  const std::string piece = detokenizer_.Push(token);
  // Pending text: held_ (already fed to the automaton) followed by `piece`.
  for (size_t i = 0; i < piece.size(); ++i) {
    state_ = Step(state_, static_cast<uint8_t>(piece[i]));
    const int32_t output = nodes_[state_].output;
    if (!honoured || output < 0) continue;
    // The first stop string to complete; `output` is the longest one ending here. It starts
    // inside the pending text: every earlier start was a proper prefix held back.
    const size_t end = held_.size() + i + 1;
    const size_t length = static_cast<size_t>(nodes_[output].depth);
    CHECK(length <= end);
    std::string delta = std::move(held_);
    delta.append(piece, 0, i + 1);
    delta.resize(options_.include_stop_in_output ? end : end - length);
    held_.clear();
    finished_ = true;
    stop_.kind = StopDecision::Kind::kStopString;
    stop_.token = token;
    stop_.stop_string = options_.stop_strings[nodes_[output].pattern];
    result.text = std::move(delta);
    result.stop = stop_;
    return result;
  }
  result.text = std::move(kept_text);
  if (piece.empty()) return result;
  held_.append(piece);
  const size_t hold = static_cast<size_t>(nodes_[state_].hold_depth);
  CHECK(hold <= held_.size());
  result.text.append(held_, 0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return result;
}

std::string OutputText::Finish() {
  if (finished_) return "";
  finished_ = true;
  std::string delta = TakeText();  // none of them stopped; nothing of theirs is held back
  delta.append(held_);
  held_.clear();
  delta.append(detokenizer_.Flush());
  return delta;
}

}  // namespace glimpse::scheduler
