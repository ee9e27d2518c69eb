#include "model/detokenizer.h"

#include <cstddef>

namespace glimpse::model {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// What a byte can start, per the Unicode well-formed UTF-8 table (no overlongs, surrogates or
// code points above U+10FFFF): how many continuation bytes follow and the range allowed for
// the first of them (the others are always 80..BF). `continuations` < 0: not a lead byte.
struct LeadInfo {
  int continuations;
  uint8_t first_low;
  uint8_t first_high;
};

LeadInfo ClassifyLead(uint8_t b) {
  if (b < 0x80) return {0, 0x80, 0xBF};
  if (b >= 0xC2 && b <= 0xDF) return {1, 0x80, 0xBF};
  if (b == 0xE0) return {2, 0xA0, 0xBF};
  if (b == 0xED) return {2, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {2, 0x80, 0xBF};
  if (b == 0xF0) return {3, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {3, 0x80, 0xBF};
  if (b == 0xF4) return {3, 0x80, 0x8F};
  return {-1, 0, 0};  // 80..C1 (continuation or overlong lead), F5..FF.
}

}  // namespace

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer,
                                           StreamingDetokenizerOptions options)
    : tokenizer_(tokenizer), options_(options) {}

std::string StreamingDetokenizer::Push(int32_t id) {
  std::string piece;
  if (first_ && options_.strip_leading_space) {
    // Mirrors Tokenizer::Decode(skip_special = !render_special): a leading BOS is dropped and
    // then nothing is stripped; otherwise the first piece loses one leading space.
    first_ = false;
    if (!options_.render_special && tokenizer_.add_bos() && id == tokenizer_.bos_id()) {
      return "";
    }
    piece = tokenizer_.TokenToPiece(id, options_.render_special);
    if (tokenizer_.add_space_prefix() && !piece.empty() && piece.front() == ' ') {
      piece.erase(0, 1);
    }
  } else {
    first_ = false;
    piece = tokenizer_.TokenToPiece(id, options_.render_special);
  }
  if (piece.empty()) return "";
  pending_.append(piece);
  std::string out;
  Drain(out);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out;
  Drain(out);
  // Whatever is left is an incomplete sequence that will now never complete.
  for (size_t i = 0; i < pending_.size(); ++i) out.append(kReplacementChar);
  pending_.clear();
  first_ = true;
  return out;
}

void StreamingDetokenizer::Drain(std::string& out) {
  out.reserve(out.size() + pending_.size());
  size_t pos = 0;
  while (pos < pending_.size()) {
    const uint8_t lead = static_cast<uint8_t>(pending_[pos]);
    const LeadInfo info = ClassifyLead(lead);
    if (info.continuations < 0) {
      out.append(kReplacementChar);
      ++pos;
      continue;
    }
    const size_t available = pending_.size() - pos - 1;
    size_t checked = 0;
    bool invalid = false;
    while (checked < static_cast<size_t>(info.continuations) && checked < available) {
      const uint8_t c = static_cast<uint8_t>(pending_[pos + 1 + checked]);
      const uint8_t low = checked == 0 ? info.first_low : 0x80;
      const uint8_t high = checked == 0 ? info.first_high : 0xBF;
      if (c < low || c > high) {
        invalid = true;
        break;
      }
      ++checked;
    }
    if (invalid) {
      // The lead byte can never complete; its would-be continuation bytes are judged on their
      // own from the next byte on (so each invalid byte becomes one U+FFFD).
      out.append(kReplacementChar);
      ++pos;
      continue;
    }
    if (checked < static_cast<size_t>(info.continuations)) break;  // Wait for more bytes.
    const size_t length = 1 + static_cast<size_t>(info.continuations);
    out.append(pending_, pos, length);
    pos += length;
  }
  pending_.erase(0, pos);
}

}  // namespace glimpse::model
