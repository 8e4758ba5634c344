#include <algorithm>
#include <cstdint>

#include <schemas/free_text.h>

namespace kolabus::schemas {

namespace {

bool digit(char c) { return c >= '0' && c <= '9'; }
bool separator(char c) { return c == ' ' || c == '.' || c == '-'; }

// The length of a valid UTF-8 sequence starting at `s[i]` that is not a control
// character, or 0.
std::size_t char_length(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return (b < 0x20 || b == 0x7f) ? 0 : 1;
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if ((b & 0xe0) == 0xc0) {
    n = 2;
    cp = b & 0x1f;
  } else if ((b & 0xf0) == 0xe0) {
    n = 3;
    cp = b & 0x0f;
  } else if ((b & 0xf8) == 0xf0) {
    n = 4;
    cp = b & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3f);
  }
  // Overlong forms, surrogates, beyond Unicode, C1 controls.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
      (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || (cp >= 0x80 && cp < 0xa0)) {
    return 0;
  }
  return n;
}

}  // namespace

std::string scrub_free_text(std::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  auto append = [&](std::string_view piece) {
    if (out.size() + piece.size() > max_bytes) return false;
    out += piece;
    return true;
  };
  std::size_t i = 0;
  while (i < text.size()) {
    if (digit(text[i])) {
      // A run of digits with single separators between them.
      std::size_t end = i, digits = 0;
      while (end < text.size()) {
        if (digit(text[end])) {
          ++digits;
          ++end;
        } else if (separator(text[end]) && end + 1 < text.size() && digit(text[end + 1])) {
          ++end;
        } else {
          break;
        }
      }
      if (!append(digits >= 16 ? kNumberWithheld : text.substr(i, end - i))) break;
      i = end;
      continue;
    }
    const std::size_t n = char_length(text, i);
    if (!append(n == 0 ? std::string_view("?") : text.substr(i, n))) break;
    i += n == 0 ? 1 : n;
  }
  return out;
}

}  // namespace kolabus::schemas
