#include "model/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace glimpse::model {
namespace {

// SentencePiece's visible space, U+2581 LOWER ONE EIGHTH BLOCK.
constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";

// Texts llama.cpp treats as end-of-generation tokens whatever the metadata says (its
// "auto-detect special tokens by text" workaround); such tokens are also made control tokens.
constexpr std::array<std::string_view, 13> kEndOfGenerationTexts = {
    "<|eot_id|>",    "<|im_end|>", "<|end|>",         "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>",           "_<EOT>",
    "<|end_of_text|>", "<end_of_utterance>", "<|return|>", "<|call|>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",  // DeepSeek
};

// Length of the UTF-8 sequence that starts with `lead`, judged from its high nibble only, as
// llama.cpp's unicode_len_utf8 does: continuation and invalid bytes count as one-byte
// characters, and a lead byte claims its length even if the bytes after it do not continue it.
size_t Utf8LengthFromLead(uint8_t lead) {
  static constexpr uint8_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

// ' ' → '▁' throughout.
std::string EscapeWhitespace(std::string_view text, bool add_prefix) {
  std::string out;
  out.reserve(text.size() + text.size() / 4 + 3);
  if (add_prefix) out.append(kSpaceMarker);
  for (char c : text) {
    if (c == ' ') {
      out.append(kSpaceMarker);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// '▁' → ' ' throughout.
std::string UnescapeWhitespace(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    if (text.compare(pos, kSpaceMarker.size(), kSpaceMarker) == 0) {
      out.push_back(' ');
      pos += kSpaceMarker.size();
    } else {
      out.push_back(text[pos++]);
    }
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte a byte token `<0xXX>` stands for: the hex digits at text[3..4], read like strtol
// (stopping at the first non-digit) as llama.cpp does.
char ByteTokenValue(std::string_view text) {
  int value = 0;
  for (size_t i = 3; i < 5 && i < text.size(); ++i) {
    const int digit = HexValue(text[i]);
    if (digit < 0) break;
    value = value * 16 + digit;
  }
  return static_cast<char>(value);
}

std::string ByteTokenText(uint8_t byte) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  return std::string{'<', '0', 'x', kHex[byte >> 4], kHex[byte & 15], '>'};
}

bool IsSpecialType(TokenType type) {
  return type == TokenType::kControl || type == TokenType::kUnknown;
}

TokenType TokenTypeFromInt(int64_t value) {
  switch (value) {
    case 1: return TokenType::kNormal;
    case 2: return TokenType::kUnknown;
    case 3: return TokenType::kControl;
    case 4: return TokenType::kUserDefined;
    case 5: return TokenType::kUnused;
    case 6: return TokenType::kByte;
    default: return TokenType::kUndefined;  // 0 and anything unknown, as llama.cpp.
  }
}

absl::Status CheckSpecialId(std::string_view name, int32_t id, size_t vocab_size) {
  if (id == kNoToken || (id >= 0 && static_cast<size_t>(id) < vocab_size)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", std::string(name), " id ", id,
                                                 " is outside the vocabulary of ", vocab_size,
                                                 " tokens"));
}

// Reads an optional integer key; `*id` keeps its default when the key is absent. Negative
// values mean "no such token".
absl::Status ReadOptionalId(const GgufFile& gguf, std::string_view key, int32_t* id,
                            size_t vocab_size) {
  absl::StatusOr<int64_t> value = gguf.GetInt(key);
  if (absl::IsNotFound(value.status())) return absl::OkStatus();
  if (!value.ok()) return absl::InvalidArgumentError(value.status().message());
  if (*value < 0) {
    *id = kNoToken;
    return absl::OkStatus();
  }
  if (static_cast<uint64_t>(*value) >= vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: '", std::string(key), "' = ", *value,
                                                   " is outside the vocabulary of ", vocab_size,
                                                   " tokens in '", gguf.path(), "'"));
  }
  *id = static_cast<int32_t>(*value);
  return absl::OkStatus();
}

absl::Status ReadOptionalBool(const GgufFile& gguf, std::string_view key, bool* flag) {
  absl::StatusOr<bool> value = gguf.GetBool(key);
  if (absl::IsNotFound(value.status())) return absl::OkStatus();
  if (!value.ok()) return absl::InvalidArgumentError(value.status().message());
  *flag = *value;
  return absl::OkStatus();
}

// One symbol of the merge loop: a byte range [offset, offset + length) of the escaped text,
// linked to its live neighbours. A symbol merged into its left neighbour has length 0.
struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t offset;
  uint32_t length;
};

// A candidate merge of two adjacent symbols whose concatenation is a vocabulary piece.
struct Bigram {
  int32_t left;
  int32_t right;
  float score;
  uint32_t length;  // Bytes of the concatenation when queued; stale if the symbols changed.
};

// Highest score first; among equal scores, the leftmost pair (llama.cpp's ordering).
struct BigramLess {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& gguf) {
  absl::StatusOr<std::string> model = gguf.GetString("tokenizer.ggml.model");
  if (!model.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer: cannot read 'tokenizer.ggml.model' from '", gguf.path(),
                     "': ", model.status().message()));
  }
  if (*model != "llama") {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer: unsupported tokenizer.ggml.model '", *model, "' in '", gguf.path(),
        "'; only 'llama' (SentencePiece) vocabularies are supported"));
  }

  TokenizerVocab vocab;
  absl::StatusOr<std::vector<std::string>> tokens = gguf.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer: cannot read 'tokenizer.ggml.tokens' from '", gguf.path(),
                     "': ", tokens.status().message()));
  }
  vocab.pieces = *std::move(tokens);
  const size_t num_tokens = vocab.pieces.size();
  if (num_tokens == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer: 'tokenizer.ggml.tokens' in '", gguf.path(), "' is empty"));
  }

  if (gguf.Find("tokenizer.ggml.scores") != nullptr) {
    absl::StatusOr<std::vector<float>> scores = gguf.GetFloatArray("tokenizer.ggml.scores");
    if (!scores.ok()) return absl::InvalidArgumentError(scores.status().message());
    if (scores->size() != num_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer: 'tokenizer.ggml.scores' has ", scores->size(), " entries but there are ",
          num_tokens, " tokens in '", gguf.path(), "'"));
    }
    vocab.scores = *std::move(scores);
  }
  if (gguf.Find("tokenizer.ggml.token_type") != nullptr) {
    absl::StatusOr<std::vector<int64_t>> types = gguf.GetIntArray("tokenizer.ggml.token_type");
    if (!types.ok()) return absl::InvalidArgumentError(types.status().message());
    if (types->size() != num_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer: 'tokenizer.ggml.token_type' has ", types->size(),
          " entries but there are ", num_tokens, " tokens in '", gguf.path(), "'"));
    }
    vocab.types.reserve(num_tokens);
    for (int64_t t : *types) vocab.types.push_back(TokenTypeFromInt(t));
  }

  // llama.cpp's defaults for a "llama" vocabulary, then whatever the file says.
  vocab.bos_id = 1;
  vocab.eos_id = 2;
  vocab.unk_id = 0;
  vocab.pad_id = kNoToken;
  for (int32_t* id : {&vocab.bos_id, &vocab.eos_id, &vocab.unk_id}) {
    if (static_cast<size_t>(*id) >= num_tokens) *id = kNoToken;
  }
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.bos_token_id", &vocab.bos_id, num_tokens));
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.eos_token_id", &vocab.eos_id, num_tokens));
  RETURN_IF_ERROR(
      ReadOptionalId(gguf, "tokenizer.ggml.unknown_token_id", &vocab.unk_id, num_tokens));
  RETURN_IF_ERROR(
      ReadOptionalId(gguf, "tokenizer.ggml.padding_token_id", &vocab.pad_id, num_tokens));
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.eot_token_id", &vocab.eot_id, num_tokens));
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.eom_token_id", &vocab.eom_id, num_tokens));
  vocab.add_bos = true;
  vocab.add_eos = false;
  vocab.add_space_prefix = true;
  RETURN_IF_ERROR(ReadOptionalBool(gguf, "tokenizer.ggml.add_bos_token", &vocab.add_bos));
  RETURN_IF_ERROR(ReadOptionalBool(gguf, "tokenizer.ggml.add_eos_token", &vocab.add_eos));
  RETURN_IF_ERROR(
      ReadOptionalBool(gguf, "tokenizer.ggml.add_space_prefix", &vocab.add_space_prefix));
  return FromVocab(std::move(vocab));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocab(TokenizerVocab vocab) {
  const size_t n = vocab.pieces.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer: the vocabulary is empty");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("tokenizer: the vocabulary has too many tokens");
  }
  if (!vocab.scores.empty() && vocab.scores.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", vocab.scores.size(),
                                                   " scores for ", n, " tokens"));
  }
  if (!vocab.types.empty() && vocab.types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", vocab.types.size(),
                                                   " token types for ", n, " tokens"));
  }
  RETURN_IF_ERROR(CheckSpecialId("BOS", vocab.bos_id, n));
  RETURN_IF_ERROR(CheckSpecialId("EOS", vocab.eos_id, n));
  RETURN_IF_ERROR(CheckSpecialId("unknown-token", vocab.unk_id, n));
  RETURN_IF_ERROR(CheckSpecialId("padding", vocab.pad_id, n));
  RETURN_IF_ERROR(CheckSpecialId("EOT", vocab.eot_id, n));
  RETURN_IF_ERROR(CheckSpecialId("EOM", vocab.eom_id, n));
  if (vocab.add_bos && vocab.bos_id == kNoToken) {
    return absl::InvalidArgumentError("tokenizer: add_bos is set but there is no BOS token");
  }
  if (vocab.add_eos && vocab.eos_id == kNoToken) {
    return absl::InvalidArgumentError("tokenizer: add_eos is set but there is no EOS token");
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(vocab)));
}

Tokenizer::Tokenizer(TokenizerVocab vocab)
    : pieces_(std::move(vocab.pieces)),
      scores_(std::move(vocab.scores)),
      types_(std::move(vocab.types)),
      bos_id_(vocab.bos_id),
      eos_id_(vocab.eos_id),
      unk_id_(vocab.unk_id),
      pad_id_(vocab.pad_id),
      add_bos_(vocab.add_bos),
      add_eos_(vocab.add_eos),
      add_space_prefix_(vocab.add_space_prefix) {
  const int32_t n = static_cast<int32_t>(pieces_.size());
  if (scores_.empty()) scores_.assign(n, 0.0f);
  if (types_.empty()) types_.assign(n, TokenType::kNormal);

  piece_to_id_.reserve(n);
  for (int32_t id = 0; id < n; ++id) {
    // llama.cpp names empty pieces so that they never match (and stay distinct).
    if (pieces_[id].empty()) pieces_[id] = absl::StrCat("[EMPTY_", id, "]");
    piece_to_id_[pieces_[id]] = id;  // Last one wins on duplicates.
  }

  for (int byte = 0; byte < 256; ++byte) {
    int32_t id = PieceToId(ByteTokenText(static_cast<uint8_t>(byte)));
    if (id == kNoToken) id = PieceToId(std::string(1, static_cast<char>(byte)));
    if (id == kNoToken) id = unk_id_;
    byte_to_id_[byte] = id;
  }

  std::vector<int32_t> eog;
  for (int32_t id : {vocab.eos_id, vocab.eot_id, vocab.eom_id}) {
    if (id != kNoToken) eog.push_back(id);
  }
  for (std::string_view text : kEndOfGenerationTexts) {
    const int32_t id = PieceToId(text);
    if (id == kNoToken) continue;
    eog.push_back(id);
    types_[id] = TokenType::kControl;
  }
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
  eog_ids_ = std::move(eog);

  for (int32_t id = 0; id < n; ++id) {
    const TokenType type = types_[id];
    if (type == TokenType::kControl || type == TokenType::kUserDefined ||
        type == TokenType::kUnknown) {
      special_ids_.push_back(id);
    }
  }
  // Longest first, so that "<|im_end|>" is matched before "<|im". Stable, so that equal
  // lengths keep id order.
  std::stable_sort(special_ids_.begin(), special_ids_.end(), [this](int32_t a, int32_t b) {
    return pieces_[a].size() > pieces_[b].size();
  });

  rendered_.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    switch (types_[id]) {
      case TokenType::kNormal:
        rendered_[id] = UnescapeWhitespace(pieces_[id]);
        break;
      case TokenType::kByte:
        rendered_[id] = std::string(1, ByteTokenValue(pieces_[id]));
        break;
      case TokenType::kControl:
      case TokenType::kUnknown:
      case TokenType::kUserDefined:
        rendered_[id] = pieces_[id];
        break;
      case TokenType::kUnused:
      case TokenType::kUndefined:
        break;  // Rendered as nothing, as llama.cpp does.
    }
  }
}

int32_t Tokenizer::PieceToId(std::string_view piece) const {
  auto it = piece_to_id_.find(piece);
  return it == piece_to_id_.end() ? kNoToken : it->second;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

std::vector<Tokenizer::Fragment> Tokenizer::PartitionSpecial(std::string_view text,
                                                             bool parse_special) const {
  std::vector<Fragment> fragments;
  if (text.empty()) return fragments;
  fragments.push_back({kNoToken, 0, text.size()});
  std::vector<Fragment> next;
  for (int32_t special : special_ids_) {
    // Without parse_special only user-defined tokens are split out (llama.cpp, after
    // HF tokenizers, pre-tokenizes added tokens before everything else).
    if (!parse_special && IsSpecialType(types_[special])) continue;
    const std::string_view needle = pieces_[special];
    next.clear();
    bool changed = false;
    for (const Fragment& fragment : fragments) {
      if (fragment.token != kNoToken) {
        next.push_back(fragment);
        continue;
      }
      const std::string_view haystack = text.substr(fragment.offset, fragment.length);
      size_t start = 0;
      while (true) {
        const size_t match = haystack.find(needle, start);
        if (match == std::string_view::npos) break;
        changed = true;
        if (match > start) next.push_back({kNoToken, fragment.offset + start, match - start});
        next.push_back({special, 0, 0});
        start = match + needle.size();
      }
      if (start < haystack.size()) {
        next.push_back({kNoToken, fragment.offset + start, haystack.size() - start});
      }
    }
    if (changed) fragments.swap(next);
  }
  return fragments;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 2 + 4);
  if (add_special && add_bos_) ids.push_back(bos_id_);
  // The dummy prefix goes before the first text fragment and before every text fragment that
  // follows a special token, as in llama.cpp (whether or not a BOS was added).
  bool previous_is_special = true;
  for (const Fragment& fragment : PartitionSpecial(text, parse_special)) {
    if (fragment.token != kNoToken) {
      ids.push_back(fragment.token);
      previous_is_special = true;
      continue;
    }
    const std::string escaped =
        EscapeWhitespace(text.substr(fragment.offset, fragment.length),
                         add_space_prefix_ && previous_is_special);
    EncodeFragment(escaped, ids);
    previous_is_special = false;
  }
  if (add_special && add_eos_) ids.push_back(eos_id_);
  return ids;
}

// The SentencePiece merge loop (llama.cpp's llm_tokenizer_spm_session):
//   1. split the text into characters (see Utf8LengthFromLead);
//   2. queue every adjacent pair whose concatenation is a vocabulary piece, keyed by that
//      piece's score;
//   3. pop the best pair; if both symbols are unchanged since it was queued, merge them and
//      queue the new symbol's pairs with its neighbours;
//   4. emit each final symbol as its piece, or byte by byte when it is not a piece.
// A merged symbol is always a vocabulary piece (pairs are only queued when they are one), so
// llama.cpp's "resegment" recursion through the merges that built a symbol never applies: only
// single characters missing from the vocabulary fall back, and they fall back to bytes.
void Tokenizer::EncodeFragment(std::string_view escaped, std::vector<int32_t>& out) const {
  if (escaped.empty()) return;
  std::vector<Symbol> symbols;
  symbols.reserve(escaped.size());
  for (size_t offset = 0; offset < escaped.size();) {
    const size_t length = std::min(Utf8LengthFromLead(static_cast<uint8_t>(escaped[offset])),
                                   escaped.size() - offset);
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({index - 1, offset + length == escaped.size() ? -1 : index + 1,
                       static_cast<uint32_t>(offset), static_cast<uint32_t>(length)});
    offset += length;
  }

  std::vector<Bigram> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Bigram, std::vector<Bigram>, BigramLess> queue(BigramLess{},
                                                                     std::move(storage));
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t length = symbols[left].length + symbols[right].length;
    const int32_t id = PieceToId(escaped.substr(symbols[left].offset, length));
    if (id == kNoToken) return;
    queue.push({left, right, scores_[id], length});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    if (left.length == 0 || right.length == 0 || left.length + right.length != bigram.length) {
      continue;  // Stale: one side was merged into something else since.
    }
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add(left.prev, bigram.left);
    try_add(bigram.left, left.next);
  }

  for (int32_t i = 0; i != -1; i = symbols[i].next) {
    const std::string_view text = escaped.substr(symbols[i].offset, symbols[i].length);
    const int32_t id = PieceToId(text);
    if (id != kNoToken) {
      out.push_back(id);
    } else {
      AppendBytes(text, out);
    }
  }
}

void Tokenizer::AppendBytes(std::string_view bytes, std::vector<int32_t>& out) const {
  for (char c : bytes) {
    const int32_t id = byte_to_id_[static_cast<uint8_t>(c)];
    // No byte token, no one-byte piece and no unknown token: the byte cannot be represented.
    if (id != kNoToken) out.push_back(id);
  }
}

std::string Tokenizer::TokenToPiece(int32_t id, bool render_special) const {
  if (id < 0 || id >= vocab_size()) return "";
  if (!render_special && IsSpecialType(types_[id])) return "";
  return rendered_[id];
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  bool strip_space = add_space_prefix_;
  if (skip_special && add_bos_ && !ids.empty() && ids.front() == bos_id_) {
    strip_space = false;  // llama.cpp keeps the space after a removed BOS.
    ids = ids.subspan(1);
  }
  if (skip_special && add_eos_ && !ids.empty() && ids.back() == eos_id_) {
    ids = ids.subspan(0, ids.size() - 1);
  }
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || (skip_special && IsSpecialType(types_[id]))) {
      strip_space = false;
      continue;
    }
    std::string_view piece = rendered_[id];
    if (strip_space && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    strip_space = false;
    text.append(piece);
  }
  return text;
}

}  // namespace glimpse::model
