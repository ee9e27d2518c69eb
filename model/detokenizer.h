// Incremental detokenization for streaming generated tokens to clients.
//
// A token may stand for part of a UTF-8 character (byte-fallback tokens such as <0xF0>), so
// text cannot be emitted token by token as it stands. StreamingDetokenizer holds back an
// incomplete trailing UTF-8 sequence until the bytes that complete it arrive, and emits only
// whole, valid UTF-8. Bytes that can never form a valid sequence (a stray continuation byte, an
// overlong or surrogate encoding, a sequence cut short by another character) are emitted as
// U+FFFD, one per invalid byte, as soon as they are known to be invalid, so the stream never
// stalls. When every byte is valid UTF-8, the concatenation of all Push() and Flush() outputs
// equals Tokenizer::Decode() of the same ids (with `strip_leading_space`, else the
// concatenation of Tokenizer::TokenToPiece()), except that Decode() also drops a trailing EOS
// when the vocabulary adds one.
//
// Ownership: borrows the Tokenizer (not owned; must outlive this object); owns only a few
// held-back bytes. Thread-safety: none; one StreamingDetokenizer per stream, used from one
// thread at a time.
#ifndef GLIMPSE_MODEL_DETOKENIZER_H_
#define GLIMPSE_MODEL_DETOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "model/tokenizer.h"

namespace glimpse::model {

struct StreamingDetokenizerOptions {
  // Drop one leading space of the first piece, as Tokenizer::Decode() does when the
  // vocabulary adds a space prefix (and not after a leading BOS). Off by default: llama.cpp's
  // server streams the pieces of generated tokens as they are.
  bool strip_leading_space = false;
  // Render control and unknown tokens as their text instead of "".
  bool render_special = false;
};

class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer,
                                StreamingDetokenizerOptions options = {});

  // Appends token `id` and returns the text it completes: zero or more whole UTF-8
  // characters (possibly none, while a multi-byte character is still incomplete).
  std::string Push(int32_t id);
  // Ends the stream: returns U+FFFD for each byte of a still-incomplete sequence, then the
  // detokenizer is ready for a new stream (the leading-space rule applies again).
  std::string Flush();

  // Bytes held back, waiting for the rest of a UTF-8 sequence (at most 3).
  size_t num_pending_bytes() const { return pending_.size(); }

 private:
  // Moves the valid prefix of pending_ (with U+FFFD for invalid bytes) into `out`, keeping a
  // trailing sequence that may still complete.
  void Drain(std::string& out);

  const Tokenizer& tokenizer_;
  StreamingDetokenizerOptions options_;
  bool first_ = true;     // No token pushed yet in this stream.
  std::string pending_;   // Held-back bytes: a proper prefix of a valid UTF-8 sequence.
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_DETOKENIZER_H_
