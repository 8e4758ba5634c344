// Free text about a person — a correction's reason, a consumer's reason for rejecting an
// event, an excerpt of a webhook's response — is personal data like any field: it may
// name a NIK or a cause of death. Such text is made safe once, where it enters a store
// or leaves for another agency (docs/SECURITY.md, "Free text"):
//
//   scrub_free_text  replaces every NIK- or KK-shaped number (16 or more digits, with or
//                    without single spaces, dots or dashes between them) by
//                    kNumberWithheld, every byte that is not valid UTF-8 or is a control
//                    character by '?', and cuts the text to at most `max_bytes` bytes on
//                    a character boundary.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kolabus::schemas {

inline constexpr std::string_view kNumberWithheld = "[number withheld]";

// The longest reason the broker stores (a Reject's reason, a dead letter's).
inline constexpr std::size_t kMaxStoredReasonBytes = 256;

std::string scrub_free_text(std::string_view text, std::size_t max_bytes = kMaxStoredReasonBytes);

}  // namespace kolabus::schemas
