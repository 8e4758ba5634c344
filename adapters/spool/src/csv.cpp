// RFC 4180 CSV, with the leniencies real exports need (see parse_csv in spool.h).
#include <adapters/spool.h>

namespace kolabus::adapters {

namespace {

bool is_blank(std::string_view s, char delimiter) {
  for (char c : s) {
    if (c == delimiter || (c != ' ' && c != '\t' && c != '\r')) return false;
  }
  return true;
}

class CsvParser {
 public:
  CsvParser(std::string_view text, char delimiter) : s_(text), delim_(delimiter) {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
  }

  std::vector<CsvRecord> run() {
    std::vector<CsvRecord> out;
    while (pos_ < s_.size()) out.push_back(next());
    return out;
  }

 private:
  bool at_line_end() const {
    return pos_ >= s_.size() || s_[pos_] == '\n' ||
           (s_[pos_] == '\r' && pos_ + 1 < s_.size() && s_[pos_ + 1] == '\n') ||
           (s_[pos_] == '\r' && pos_ + 1 == s_.size());
  }
  // Moves past a line end at pos_ (if any).
  void eat_line_end() {
    if (pos_ < s_.size() && s_[pos_] == '\r') ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '\n') {
      ++pos_;
      ++line_;
    }
  }
  void finish_text(CsvRecord& r, std::size_t start) {
    std::size_t end = pos_;
    r.text.assign(s_.substr(start, end - start));
    eat_line_end();
  }

  CsvRecord next() {
    CsvRecord r;
    r.line = line_;
    const std::size_t start = pos_;

    // A blank line is not a record (a single-column file's empty value would be
    // indistinguishable from it anyway).
    const std::size_t nl = s_.find('\n', pos_);
    const std::string_view physical =
        s_.substr(pos_, nl == std::string_view::npos ? std::string_view::npos : nl - pos_);
    if (is_blank(physical, delim_)) {
      r.empty = true;
      pos_ += physical.size();
      r.text.assign(physical);
      if (!r.text.empty() && r.text.back() == '\r') r.text.pop_back();
      eat_line_end();
      return r;
    }

    while (true) {
      // Spaces before an opening quote are ignored; elsewhere they are data.
      std::size_t probe = pos_;
      while (probe < s_.size() && (s_[probe] == ' ' || s_[probe] == '\t') && s_[probe] != delim_) {
        ++probe;
      }
      std::string field;
      if (probe < s_.size() && s_[probe] == '"') {
        const std::size_t open_line = line_;
        pos_ = probe + 1;
        bool closed = false;
        while (pos_ < s_.size()) {
          const char c = s_[pos_];
          if (c == '"') {
            if (pos_ + 1 < s_.size() && s_[pos_ + 1] == '"') {
              field.push_back('"');
              pos_ += 2;
              continue;
            }
            ++pos_;
            closed = true;
            break;
          }
          if (c == '\n') ++line_;
          field.push_back(c);
          ++pos_;
        }
        if (!closed) {
          r.error = "unterminated quoted field (opened on line " + std::to_string(open_line) + ")";
          r.fields.clear();
          r.text.assign(s_.substr(start));
          if (!r.text.empty() && r.text.back() == '\n') r.text.pop_back();
          if (!r.text.empty() && r.text.back() == '\r') r.text.pop_back();
          pos_ = s_.size();
          return r;
        }
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t') && s_[pos_] != delim_) {
          ++pos_;
        }
        if (!at_line_end() && s_[pos_] != delim_) {
          r.error = "unexpected character '" + std::string(1, s_[pos_]) +
                    "' after a closing quote (a quote inside a quoted field must be doubled)";
          r.fields.clear();
          while (pos_ < s_.size() && s_[pos_] != '\n') ++pos_;
          finish_text(r, start);
          if (!r.text.empty() && r.text.back() == '\r') r.text.pop_back();
          return r;
        }
      } else {
        while (!at_line_end() && s_[pos_] != delim_) field.push_back(s_[pos_++]);
      }
      r.fields.push_back(std::move(field));
      if (at_line_end()) break;
      ++pos_;  // the delimiter
    }
    finish_text(r, start);
    return r;
  }

  std::string_view s_;
  char delim_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
};

}  // namespace

std::vector<CsvRecord> parse_csv(std::string_view text, char delimiter) {
  return CsvParser(text, delimiter).run();
}

}  // namespace kolabus::adapters
