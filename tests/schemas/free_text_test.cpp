// scrub_free_text: NIK-shaped numbers, bad bytes and length in free text about a person.
#include <doctest/doctest.h>

#include <schemas/free_text.h>

using kolabus::schemas::scrub_free_text;

TEST_CASE("Free text: a 16-digit number is withheld, with or without separators") {
  CHECK(scrub_free_text("bad NIK 1271014507900001 in row 7") ==
        "bad NIK [number withheld] in row 7");
  CHECK(scrub_free_text("KK 1271-0145-0790-0001.") == "KK [number withheld].");
  CHECK(scrub_free_text("nik 1271 0145 0790 0001") == "nik [number withheld]");
  // As people copy it from forms and spreadsheets.
  CHECK(scrub_free_text("a 1271  0112  3456  0001 b") == "a [number withheld] b");
  CHECK(scrub_free_text("1271\xC2\xA0"
                        "0112\xC2\xA0"
                        "3456\xC2\xA0"
                        "0001") == "[number withheld]");
  CHECK(scrub_free_text("c 1271 - 0112 - 3456 - 0001.") == "c [number withheld].");
  CHECK(scrub_free_text("1271/0112/3456/0001, 1271_0112_3456_0001") == "[number withheld]");
  CHECK(scrub_free_text("(1271) 0112-3456-0001") == "([number withheld]");
  // Full-width digits (U+FF11 ...) and Arabic-Indic ones (U+0661 ...).
  std::string wide, arabic;
  for (int k = 0; k < 16; ++k) {
    wide += "\xEF\xBC";
    wide += static_cast<char>(0x91 + k % 9);
    arabic += "\xD9";
    arabic += static_cast<char>(0xA1 + k % 9);
  }
  CHECK(scrub_free_text("x " + wide + " y") == "x [number withheld] y");
  CHECK(scrub_free_text(arabic) == "[number withheld]");
  CHECK(scrub_free_text("a 20-digit 12710145079000011234 one") ==
        "a 20-digit [number withheld] one");
  // Shorter numbers are dates, counts, sequences, region codes: kept.
  CHECK(scrub_free_text("row 12 of 2026-12-03, region 1271011001, seq 123456789012345") ==
        "row 12 of 2026-12-03, region 1271011001, seq 123456789012345");
}

TEST_CASE("Free text: bytes that are not UTF-8 and control characters become '?'") {
  CHECK(scrub_free_text("a\xff\xfe b") == "a?? b");
  CHECK(scrub_free_text("line\nbreak\ttab") == "line?break?tab");
  CHECK(scrub_free_text("kelurahan Pasar Baru — ok") == "kelurahan Pasar Baru — ok");
  CHECK(scrub_free_text("\xc0\xaf overlong") == "?? overlong");
  CHECK(scrub_free_text("cut \xe2\x80") == "cut ??");
}

TEST_CASE("Free text: the result never exceeds the limit, nor splits a character") {
  const std::string long_text(1000, 'x');
  CHECK(scrub_free_text(long_text).size() == kolabus::schemas::kMaxStoredReasonBytes);
  CHECK(scrub_free_text("ab\xe2\x80\x94", 4) == "ab");      // the dash would need 3 more bytes
  CHECK(scrub_free_text("x 1271014507900001", 5) == "x ");  // no partial number either
}
