// Incremental output text of one generated sequence: turns sampled token ids into the text
// deltas a client receives, and decides when the sequence stops (EOS, a stop token id or a
// stop string). This is the one place that says "this token finishes the sequence, and why".
//
// Text comes from a StreamingDetokenizer (whole UTF-8 characters only). Stop strings are
// matched on that text, across token boundaries, with an Aho-Corasick automaton fed byte by
// byte: its state is the longest suffix of the text that is a prefix of some stop string, so
// it also says how much text must be held back. A delta never contains text that might still
// turn out to be the start of a stop string:
//
//   text so far:  ... emitted ... | held back (a proper prefix of some stop string) |
//                                 ^ at most (longest stop string - 1) bytes from the end
//
// Semantics (engine.proto StoppingOptions; vLLM where the proto is silent):
// - Tokens are counted from 1. Token k is "honoured" when k >= min_tokens: only then can it
//   be an EOS / stop token stop, and only then can a stop string whose last byte lies in the
//   text that token k completed end the sequence. (A stop string may start in earlier text.)
//   A stop string that completed before min_tokens is never matched later.
// - EOS / stop token ids are decided before stop strings on the same token (as vLLM). EOS
//   means `eos_token_ids` unless ignore_eos; a token both EOS and a stop token id is kEos
//   (kStopToken under ignore_eos). On such a stop the held-back text is released, the stop
//   token's own text (as skip_special_tokens renders it) is emitted only with
//   include_stop_in_output, then incomplete UTF-8 becomes U+FFFD. That final text is not
//   matched against stop strings.
// - Among stop strings, the first one to complete wins: the occurrence with the earliest end
//   in the text; at equal ends, the longest (earliest start). So the result does not depend on
//   how the text is split into tokens nor on the order of the stop strings.
// - On a stop string the delta ends right before it (right after it with
//   include_stop_in_output); text after it, even within the same token, is dropped.
// - The stopping token always counts as generated (it stays in the caller's token_ids).
// - With strip_leading_space off (the default, as llama.cpp's server streams), the text is
//   the concatenation of Tokenizer::TokenToPiece(id, !skip_special_tokens); with it on, it is
//   Tokenizer::Decode(ids, skip_special_tokens) (see StreamingDetokenizer).
//
// Without stop strings a token's stop depends on its id alone, so the text can wait:
// AppendDeferred decides at once and keeps the token; TakeText renders what it kept (the engine
// does so while the next step computes). The text is the same as Append's, however the calls
// are interleaved.
//
// Cost: per Append, O(bytes of the token's text + longest stop string) amortized; per
// AppendDeferred O(log(stop and EOS ids)); memory O(sum of stop string lengths + tokens kept).
// The caller accumulates the deltas it needs.
//
// Ownership: borrows the Tokenizer (not owned; must outlive); owns its options, automaton and
// held-back text. Thread-safety: none; one OutputText per sequence, used from the engine thread.
#ifndef GLIMPSE_SCHEDULER_OUTPUT_TEXT_H_
#define GLIMPSE_SCHEDULER_OUTPUT_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/detokenizer.h"
#include "model/tokenizer.h"

namespace glimpse::scheduler {

struct OutputTextOptions {
  // Matched on the output text. Empty strings are ignored (the API rejects them upstream);
  // duplicates are harmless.
  std::vector<std::string> stop_strings;
  // Token ids that end the sequence when generated (in addition to EOS).
  std::vector<int32_t> stop_token_ids;
  // The model's end-of-generation ids. Unset: tokenizer.end_of_generation_ids().
  std::optional<std::vector<int32_t>> eos_token_ids;
  bool ignore_eos = false;
  // Keep the matched stop string / the stop token's text in the output text.
  bool include_stop_in_output = false;
  // Control and unknown tokens produce no text (so EOS text never appears).
  bool skip_special_tokens = true;
  // EOS, stop token ids and stop strings are not honoured before this many generated tokens.
  int32_t min_tokens = 0;
  // Drop one leading space of the first token's text (Tokenizer::Decode's rule). Off: stream
  // pieces as they are, so that prompt text + output text reads right.
  bool strip_leading_space = false;
  // Off: nobody reads the text (a request that did not ask to detokenize). Without stop
  // strings AppendDeferred then keeps no token and TakeText and Finish return ""; stop strings
  // still read the text (Append), whatever this says.
  bool render_text = true;
};

// Why a token ended the sequence, if it did.
struct StopDecision {
  enum class Kind {
    kNone,        // Not stopped (by this token).
    kEos,         // One of the EOS ids (Complete.eos_token_id).
    kStopToken,   // One of stop_token_ids (Complete.stop_token_id).
    kStopString,  // stop_string matched (Complete.stop_str).
  };
  Kind kind = Kind::kNone;
  int32_t token = model::kNoToken;  // The token that ended the sequence; kNoToken for kNone.
  std::string stop_string;          // kStopString: the stop string as given; else empty.

  bool stopped() const { return kind != Kind::kNone; }
};

struct AppendResult {
  std::string text;   // New text safe to send now: whole UTF-8 characters, possibly empty.
  StopDecision stop;  // stop.stopped(): this token ended the sequence; send no more tokens.
};

class OutputText {
 public:
  OutputText(const model::Tokenizer& tokenizer, OutputTextOptions options);

  OutputText(const OutputText&) = delete;
  OutputText& operator=(const OutputText&) = delete;

  // Takes the next generated token. Must not be called once finished() (a CHECK). The text
  // starts with that of tokens AppendDeferred kept.
  AppendResult Append(int32_t token);

  // Takes the next generated token of a sequence without stop strings (a CHECK; see
  // has_stop_strings) and decides as Append would whether it stops the sequence, but keeps its
  // text for TakeText (unless render_text is off). Must not be called once finished(). The
  // reference is valid until the next call.
  const StopDecision& AppendDeferred(int32_t token);

  // The text of the tokens AppendDeferred kept (a stopping one rendered as Append would), as
  // Append would have delivered it; "" when none. Also after a stop.
  std::string TakeText();

  // Ends a sequence that did not stop by itself (length limit, abort, deadline): returns the
  // text of the tokens AppendDeferred kept and the held-back text (no stop string can complete
  // anymore) with an incomplete trailing UTF-8 sequence as U+FFFD. Returns "" if the sequence
  // already stopped or finished.
  std::string Finish();

  // Tokens appended so far, including a stopping token.
  int32_t num_tokens() const { return num_tokens_; }
  // A token stopped the sequence or Finish() was called.
  bool finished() const { return finished_; }
  // The decision of the token that stopped the sequence; kind kNone otherwise.
  const StopDecision& stop() const { return stop_; }
  // Text held back as a possible stop-string start: less than the longest stop string.
  size_t num_held_bytes() const { return held_.size(); }
  // Stop strings need the text to decide a stop: AppendDeferred is for sequences without.
  bool has_stop_strings() const { return nodes_.size() > 1; }
  // AppendDeferred kept tokens whose text TakeText has not rendered yet.
  bool has_kept_tokens() const { return !kept_.empty(); }

 private:
  // One trie node of the Aho-Corasick automaton over the stop strings' bytes.
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // (byte, node), sorted by byte.
    int32_t fail = 0;        // Node of the longest proper suffix that is also a trie node.
    int32_t depth = 0;       // Bytes from the root.
    int32_t pattern = -1;    // Index into stop_strings of the string ending exactly here.
    int32_t output = -1;     // Deepest node on the fail chain (self included) with a pattern.
    int32_t hold_depth = 0;  // Depth of the deepest node on the fail chain with children.
  };

  void BuildAutomaton();
  int32_t Child(int32_t node, uint8_t byte) const;  // -1 when absent.
  int32_t Step(int32_t node, uint8_t byte) const;
  bool IsEos(int32_t token) const;
  bool IsStopToken(int32_t token) const;
  // The stop a token makes by its id alone (EOS, stop token ids), given it is the
  // num_tokens_-th.
  StopDecision::Kind IdStop(int32_t token) const;

  const model::Tokenizer& tokenizer_;
  OutputTextOptions options_;
  std::vector<int32_t> eos_ids_;  // Sorted.
  std::vector<int32_t> stop_ids_;  // Sorted.
  model::StreamingDetokenizer detokenizer_;
  std::vector<Node> nodes_;  // nodes_[0] is the root (empty prefix).
  int32_t state_ = 0;        // Automaton state after all text so far.
  std::string held_;         // Text not yet emitted; its length is nodes_[state_].hold_depth.
  std::vector<int32_t> kept_;  // AppendDeferred's tokens not rendered yet; a stopping one last.
  int32_t num_tokens_ = 0;
  bool finished_ = false;
  StopDecision stop_;
};

}  // namespace glimpse::scheduler

#endif  // GLIMPSE_SCHEDULER_OUTPUT_TEXT_H_
