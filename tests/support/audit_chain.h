// Test helper: reads a running broker's whole audit chain through AuditRead, page by
// page, and checks every link on the way (broker::ChainVerifier), as `kolabus audit
// verify` does.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <broker/audit.h>
#include <client/admin.h>

namespace kolabus::test {

struct ChainRead {
  std::vector<std::string> records;             // the bytes, in index order
  std::optional<broker::AuditProblem> problem;  // the first bad record, if any
};

// `page` records per AuditRead: small pages exercise paging.
inline ChainRead read_audit_chain(client::AdminClient& admin, std::uint32_t page = 1000) {
  ChainRead out;
  broker::ChainVerifier v;
  std::uint64_t from = 1;
  while (true) {
    auto p = admin.audit_read(from, 0, page);
    // Not REQUIRE_MESSAGE: doctest -s builds the message of a passing check too, and
    // error() of a value aborts.
    if (!p) FAIL(p.error().to_string());
    for (auto& [key, bytes] : p->records) {
      if (v.feed(key, bytes)) {
        out.problem = v.problem();
        return out;
      }
      out.records.push_back(std::move(bytes));
    }
    if (p->done) {
      storage::AuditHead head{p->head_index, {}};
      REQUIRE(p->head_hash.size() == head.hash.size());
      std::copy(p->head_hash.begin(), p->head_hash.end(), head.hash.begin());
      out.problem = v.finish(head);
      return out;
    }
    from = p->next_index;
  }
}

}  // namespace kolabus::test
