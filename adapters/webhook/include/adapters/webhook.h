// Webhook sink: a durable consumer that POSTs every event it receives, as JSON, to an
// agency's HTTP endpoint (one [[webhook]] entry of agency.toml).
//
// Request: POST <url>, body
//   {"sequence":N,"received_at":ms,"source":"agency","event":{...}}
// where "event" is the event in kolabus JSON form (schemas::JsonCodec::to_json), and
// headers Content-Type: application/json, Idempotency-Key: <event id, UUID>,
// X-Kolabus-Sequence: N, X-Kolabus-Attempt: the broker's delivery attempt (from 1),
// the Standard Webhooks headers webhook-id (the event id, as Idempotency-Key),
// webhook-timestamp (this attempt's Unix seconds) and webhook-signature ("v1,<base64>"
// per secret, space-separated; adapters/webhook_signature.h), plus the configured extra
// headers.
//
// Verdicts:
//   2xx                          -> Ack (the inbox marks the event processed);
//   408, 429, 5xx, timeout, no connection
//                                -> Nak with delay min(backoff_max, backoff_initial *
//                                   2^(attempt-1)) * random(0.5..1.5), at least a
//                                   Retry-After the server sent (capped at backoff_max).
//                                   The broker holds the event and redelivers it after
//                                   the delay, so the backoff survives an adapter
//                                   restart; after max_attempts deliveries the broker
//                                   moves it to the consumer's dead letters;
//   any other status (3xx, 4xx)  -> Reject: to the dead letters at once, the reason
//                                   naming the status and the first 500 bytes of the body.
// Delivery is at least once: a crash after the endpoint answered 2xx but before the
// inbox commit sends the event again with the same Idempotency-Key. Events are not
// delivered in order when some are retried (X-Kolabus-Sequence says the log order).
//
// Table keys (unknown keys are an error naming the key):
//   consumer            REQUIRED  the durable consumer's name ([A-Za-z0-9._-], <= 64)
//   url                 REQUIRED  http://host[:port]/path (or https://)
//   kinds               ["birth","death","move"]; default: every kind
//   regions             region prefixes (2, 4, 6 or 10 digits); default: every region
//   start               "earliest" (default) or "latest": where a NEW consumer begins
//   timeout_ms          5000, 1..6000: connect, write and read timeouts of one request
//   max_attempts        20: deliveries before the broker dead-letters an event
//   backoff_initial_ms  500
//   backoff_max_ms      60000
//   window              20: deliveries outstanding at once (1..10000)
//   ack_wait_ms         30000; must exceed 2 x timeout_ms
//   headers             a table of extra request headers (string values)
//   secret_file         REQUIRED  the file of the endpoint's signing secret ("whsec_...",
//                                 mode 0600: refused when group or others may read it)
//   previous_secret_file          during a rotation, the file of the secret being
//                                 replaced: requests then carry both signatures
// State: the consumer's inbox in <data_dir>/inbox-<consumer>.
//
// Why timeout_ms is capped: the handler runs the request inline, and a request can take
// connect + read ~ 2 x timeout_ms, during which the consumer sends nothing; the broker
// detaches a client silent for its client_timeout_ms (default 15000).
//
// Ownership: the adapter owns its consumer, its HTTP client and its thread.
// Thread-safety: as adapters::Adapter (start/stop from the runner's thread).
#pragma once

#include <cstdint>
#include <memory>

#include <toml++/toml.h>

#include <adapters/adapter.h>
#include <common/result.h>

namespace kolabus::adapters {

Result<std::unique_ptr<Adapter>> make_webhook(const toml::table& table,
                                              const AgencyContext& context);

// The Nak delay for a failed delivery `attempt` (>= 1): min(max_ms, initial_ms *
// 2^(attempt-1)) scaled by `jitter`, which the adapter draws uniformly from [0.5, 1.5).
// Exposed for tests.
std::uint32_t webhook_retry_delay_ms(std::uint32_t attempt, std::uint32_t initial_ms,
                                     std::uint32_t max_ms, double jitter);

}  // namespace kolabus::adapters
