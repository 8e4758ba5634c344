// Ward register: a kelurahan's (or kecamatan's) own register of its residents' births,
// deaths and moves, kept in a SQLite file by a durable consumer (one [[ward]] entry of
// agency.toml), and the office's report over it.
//
// Table `events`, one row per event, keyed by the event id:
//   event_id TEXT PRIMARY KEY   UUID
//   sequence INTEGER            the broker's log sequence
//   kind TEXT                   birth, death, move, correction
//   change TEXT                 born, died, moved_in, moved_out, moved_within (both ends
//                               inside the register's prefixes), corrected, voided
//   village TEXT                the register's village the row is about: the birth's or
//                               death's village; for a move the end inside the prefixes
//                               (moved_within: the destination); for a correction the
//                               corrected payload's village inside, else the first of the
//                               event's regions inside
//   name TEXT, niks TEXT        the person (birth: child; death: deceased; move: NULL
//                               name, NIKs comma-separated); a correction: its corrected
//                               payload's, NULL for a void
//   occurred_at, received_at INTEGER (UTC ms), source TEXT (the publishing agency),
//   json TEXT                   the event in kolabus JSON form (schemas::JsonCodec)
//   target_id TEXT              a correction's target event id, else NULL
// An event whose villages all lie outside the prefixes (the broker routed it wrongly,
// or the prefixes were edited) is still recorded, with its own village, and shows as
// `foreign` in the report.
//
// Exactly once: the handler INSERTs the row (ON CONFLICT(event_id) DO NOTHING) in its
// own committed SQLite transaction (WAL, synchronous=FULL), then returns Ack, and the
// consumer commits the inbox mark. A crash between the two redelivers the event, and
// the insert is a no-op: the register holds each event once, whatever is replayed.
//
// Table keys (unknown keys are an error naming the key):
//   consumer   REQUIRED  the durable consumer's name ([A-Za-z0-9._-], <= 64)
//   regions    REQUIRED  one or more region prefixes (2, 4, 6 or 10 digits), e.g. a
//                        kelurahan "1271011001" or a kecamatan "127101"
//   start      "earliest" (default) or "latest": where a NEW consumer begins
//   register   the SQLite file; default <data_dir>/register.sqlite
//   window     100: deliveries outstanding at once (1..10000)
// State: the consumer's inbox in <data_dir>/inbox-<consumer>, and the register.
//
// Ownership: the adapter owns its consumer, its SQLite connection and its thread.
// Thread-safety: as adapters::Adapter. ward_report may run while an adapter writes the
// same register (SQLite WAL readers do not block the writer).
#pragma once

#include <memory>
#include <string>

#include <toml++/toml.h>

#include <adapters/adapter.h>
#include <common/clock.h>
#include <common/result.h>

namespace kolabus::adapters {

Result<std::unique_ptr<Adapter>> make_ward(const toml::table& table, const AgencyContext& context);

// The report of one register (the [[ward]] table that keeps it) for events that
// occurred in [from, to) (UTC ms): counts per village and per change, and totals; and,
// over the whole register, `rows` and `foreign` (rows whose village is outside the
// register's prefixes; anything but 0 is a routing bug). Villages listed: those with
// rows in the period, plus every village of a 6- or 10-digit prefix.
// json == false: a table for people, e.g.
//   Ward register var/kel/register.sqlite, regions 1271011001
//   Events that occurred in [2026-11-27 00:00:00, 2026-11-28 00:00:00) UTC
//
//   village     name         born  died  moved in  moved out  moved within  corrected  voided
//   1271011001  SEI AGUL        3     1         2          1             0          1       0
//   total                       3     1         2          1             0          1       0
//
//   Rows in the register: 57. Foreign rows (village outside 1271011001): 0.
// json == true: one object {"register","regions","from","to","villages":[{"code","name",
// "born","died","moved_in","moved_out","moved_within","corrected","voided","total"}],
// "totals":{...same counts...},"rows","foreign"}.
// Errors: the table's (as make_ward); kNotFound if the register file does not exist;
// kIoError for SQLite failures.
Result<std::string> ward_report(const toml::table& ward_table, const AgencyContext& context,
                                TimeMs from, TimeMs to, bool json);

}  // namespace kolabus::adapters
