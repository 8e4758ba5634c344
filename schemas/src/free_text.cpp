#include <algorithm>
#include <cstdint>

#include <schemas/free_text.h>

namespace kolabus::schemas {

namespace {

// The byte length of the decimal digit at `s[i]`, or 0: ASCII, and the digits people
// paste from other scripts and forms (Arabic-Indic, extended Arabic-Indic, Devanagari,
// full-width).
std::size_t digit_at(std::string_view s, std::size_t i) {
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const std::size_t left = s.size() - i;
  if (at(0) >= '0' && at(0) <= '9') return 1;
  if (left >= 2 && at(0) == 0xD9 && at(1) >= 0xA0 && at(1) <= 0xA9) return 2;  // U+0660..9
  if (left >= 2 && at(0) == 0xDB && at(1) >= 0xB0 && at(1) <= 0xB9) return 2;  // U+06F0..9
  if (left >= 3 && at(0) == 0xE0 && at(1) == 0xA5 && at(2) >= 0xA6 && at(2) <= 0xAF) return 3;
  if (left >= 3 && at(0) == 0xEF && at(1) == 0xBC && at(2) >= 0x90 && at(2) <= 0x99) return 3;
  return 0;
}

// The byte length of a character that may stand between the digit groups of one number
// (spaces, punctuation, no-break and other Unicode spaces, dashes), or 0.
std::size_t separator_at(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || c == '\t' || c == '.' || c == '-' || c == '/' || c == '_' || c == ',' ||
      c == ':' || c == '+' || c == '(' || c == ')' || c == '\'' || c == '"' || c == '*' ||
      c == '#' || c == '|') {
    return 1;
  }
  if (i + 1 < s.size() && c == 0xC2 && static_cast<unsigned char>(s[i + 1]) == 0xA0) return 2;
  if (i + 2 < s.size() && c == 0xE2 && static_cast<unsigned char>(s[i + 1]) == 0x80) {
    const auto d = static_cast<unsigned char>(s[i + 2]);
    if (d <= 0x8F || (d >= 0x90 && d <= 0x95) || d == 0xAF) return 3;  // spaces, dashes
  }
  return 0;
}

// Up to this many separator characters may stand between two digit groups.
constexpr int kMaxGap = 3;

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
    if (const std::size_t d0 = digit_at(text, i); d0 > 0) {
      // A run of digit groups with short gaps of separators between them.
      std::size_t end = i + d0, digits = 1;
      while (end < text.size()) {
        if (const std::size_t d = digit_at(text, end); d > 0) {
          ++digits;
          end += d;
          continue;
        }
        std::size_t gap = end;
        int gap_chars = 0;
        while (gap < text.size() && gap_chars < kMaxGap) {
          const std::size_t sep = separator_at(text, gap);
          if (sep == 0) break;
          gap += sep;
          ++gap_chars;
        }
        if (gap_chars == 0 || gap >= text.size() || digit_at(text, gap) == 0) break;
        end = gap;
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
