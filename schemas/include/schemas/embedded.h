// Data compiled into the schemas library (see src/embedded.S).
#pragma once

#include <string_view>

extern "C" {
extern const char kolabus_events_fbs_begin[];
extern const char kolabus_events_fbs_end[];
extern const char kolabus_wilayah_csv_begin[];
extern const char kolabus_wilayah_csv_end[];
}

namespace kolabus::schemas {

// The text of schemas/events.fbs, as built. Valid for the life of the process.
inline std::string_view events_schema_text() {
  return {kolabus_events_fbs_begin,
          static_cast<std::size_t>(kolabus_events_fbs_end - kolabus_events_fbs_begin)};
}

// data/wilayah/wilayah.csv (code,name,level), as built. Valid for the life of the process.
inline std::string_view wilayah_csv_text() {
  return {kolabus_wilayah_csv_begin,
          static_cast<std::size_t>(kolabus_wilayah_csv_end - kolabus_wilayah_csv_begin)};
}

}  // namespace kolabus::schemas
