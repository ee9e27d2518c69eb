// SentencePiece-style ("llama" vocabulary, `tokenizer.ggml.model = llama`) tokenizer built from
// GGUF metadata. It reproduces llama.cpp's SPM tokenizer token for token: special-token
// partitioning of the input, the dummy-prefix space, score-driven pair merging and byte
// fallback; and its detokenizer (token_to_piece / llama_detokenize).
//
// This is the SPM implementation only. A byte-level BPE ("gpt2") tokenizer comes later as a
// second implementation; an interface will be extracted then, when two implementations exist.
//
// Ownership: Tokenizer owns a copy of the vocabulary; it keeps no reference to the GgufFile.
// Thread-safety: immutable after construction; every method is const and safe to call from
// any number of threads at once (Encode allocates its scratch per call).
#ifndef GLIMPSE_MODEL_TOKENIZER_H_
#define GLIMPSE_MODEL_TOKENIZER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/statusor.h"
#include "model/gguf.h"

namespace glimpse::model {

// Token types as stored in `tokenizer.ggml.token_type` (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Sentinel for "no such special token".
inline constexpr int32_t kNoToken = -1;

// Everything the tokenizer needs, independent of where it came from (GGUF, tests).
struct TokenizerVocab {
  std::vector<std::string> pieces;  // Raw vocabulary text; '▁' (U+2581) stands for a space.
  std::vector<float> scores;        // Merge priority per piece; empty means all 0.
  std::vector<TokenType> types;     // Per piece; empty means all kNormal.
  int32_t bos_id = 1;               // kNoToken when the vocabulary has none.
  int32_t eos_id = 2;
  int32_t unk_id = 0;
  int32_t pad_id = kNoToken;
  int32_t eot_id = kNoToken;  // End of turn (chat models), if any.
  int32_t eom_id = kNoToken;  // End of message (tool calls), if any.
  bool add_bos = true;            // Encode(add_special=true) prepends BOS.
  bool add_eos = false;           // Encode(add_special=true) appends EOS.
  bool add_space_prefix = true;   // SentencePiece's dummy prefix ("▁" before the text).
};

class Tokenizer {
 public:
  // Reads the `tokenizer.ggml.*` metadata. Errors (InvalidArgument, naming the key): missing
  // or mistyped tokens array or model name, a model other than "llama", scores or token types
  // whose length differs from the tokens', special token ids outside the vocabulary.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf);
  // Validates `vocab` (non-empty, matching lengths, special ids in range, BOS/EOS present when
  // they are to be added) and builds the lookup tables.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocab(TokenizerVocab vocab);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text (UTF-8; invalid bytes are tolerated and come out as byte tokens) to token ids.
  // `add_special`: prepend BOS / append EOS as the vocabulary's add_bos / add_eos say.
  // `parse_special`: text equal to a control or unknown token (e.g. "</s>") becomes that
  // token; without it such text is tokenized as plain text. User-defined tokens are always
  // matched, as in llama.cpp.
  std::vector<int32_t> Encode(std::string_view text, bool add_special,
                              bool parse_special = false) const;

  // The bytes token `id` stands for: '▁' becomes ' ', a byte token `<0xXX>` its single raw
  // byte, user-defined tokens their text. Control and unknown tokens give "" unless
  // `render_special` (then their text); unused/undefined tokens and out-of-range ids give "".
  // A piece may be an incomplete UTF-8 sequence (byte tokens); see StreamingDetokenizer.
  std::string TokenToPiece(int32_t id, bool render_special = false) const;

  // llama.cpp's llama_detokenize: concatenated pieces, where the first piece loses one
  // leading space when the vocabulary adds a space prefix. `skip_special` (= llama.cpp's
  // remove_special with unparse_special off) drops a leading BOS (and then keeps the space of
  // the next piece, as llama.cpp does), a trailing EOS when add_eos, and renders control
  // tokens as ""; without it control tokens are rendered as their text.
  std::string Decode(std::span<const int32_t> ids, bool skip_special = true) const;

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // EOS, EOT, EOM and the tokens llama.cpp recognises as end-of-generation by their text
  // ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", ...); like llama.cpp, the constructor makes
  // the latter control tokens whatever type the vocabulary gave them.
  bool IsEndOfGeneration(int32_t id) const;
  const std::vector<int32_t>& end_of_generation_ids() const { return eog_ids_; }

  // Raw vocabulary text of `id` (0 <= id < vocab_size()).
  const std::string& piece(int32_t id) const { return pieces_[id]; }
  TokenType type(int32_t id) const { return types_[id]; }
  float score(int32_t id) const { return scores_[id]; }
  // Id of the piece with exactly this raw text, or kNoToken.
  int32_t PieceToId(std::string_view piece) const;

 private:
  // A slice of the input: either plain text [offset, offset + length) or one special token.
  struct Fragment {
    int32_t token = kNoToken;  // kNoToken for text.
    size_t offset = 0;
    size_t length = 0;
  };

  explicit Tokenizer(TokenizerVocab vocab);

  // llama.cpp's tokenizer_st_partition: splits text fragments at every occurrence of a
  // special token's text, longest tokens first.
  std::vector<Fragment> PartitionSpecial(std::string_view text, bool parse_special) const;
  // Tokenizes one plain-text fragment (already escaped and prefixed) and appends the ids.
  void EncodeFragment(std::string_view escaped, std::vector<int32_t>& out) const;
  // Appends the byte-fallback id(s) for every byte of `bytes`.
  void AppendBytes(std::string_view bytes, std::vector<int32_t>& out) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  // Decoded bytes per id as if render_special were on (llama.cpp's token-to-piece cache).
  std::vector<std::string> rendered_;
  // Heterogeneous hashing, so that lookups by std::string_view do not allocate (Debian's
  // Abseil has its own string_view, which std::string_view does not convert to).
  struct PieceHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const {
      return absl::Hash<absl::string_view>()(absl::string_view(s.data(), s.size()));
    }
  };

  // Raw text → id; a duplicated text maps to its last id, as in llama.cpp.
  absl::flat_hash_map<std::string, int32_t, PieceHash, std::equal_to<>> piece_to_id_;
  // Byte-fallback id per byte value: `<0xXX>`, else the one-byte piece, else unk (or kNoToken).
  int32_t byte_to_id_[256];
  // Control, user-defined and unknown ids with non-empty text, longest text first.
  std::vector<int32_t> special_ids_;
  std::vector<int32_t> eog_ids_;  // Sorted.
  int32_t bos_id_;
  int32_t eos_id_;
  int32_t unk_id_;
  int32_t pad_id_;
  bool add_bos_;
  bool add_eos_;
  bool add_space_prefix_;
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_TOKENIZER_H_
