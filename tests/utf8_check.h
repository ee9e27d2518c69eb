// An independent, strict UTF-8 validity check for tests of text-producing code (no overlong
// encodings, surrogates, or code points past U+10FFFF). Deliberately separate from the
// production UTF-8 handling it is used to check.
#ifndef GLIMPSE_TESTS_UTF8_CHECK_H_
#define GLIMPSE_TESTS_UTF8_CHECK_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace glimpse::testing {

inline bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t b = static_cast<uint8_t>(s[i]);
    uint32_t cp;
    size_t n;
    if (b < 0x80) {
      cp = b, n = 1;
    } else if ((b & 0xE0) == 0xC0) {
      cp = b & 0x1F, n = 2;
    } else if ((b & 0xF0) == 0xE0) {
      cp = b & 0x0F, n = 3;
    } else if ((b & 0xF8) == 0xF0) {
      cp = b & 0x07, n = 4;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const uint8_t c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

}  // namespace glimpse::testing

#endif  // GLIMPSE_TESTS_UTF8_CHECK_H_
