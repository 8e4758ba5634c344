#!/usr/bin/env bash
# Writes one upgrade fixture (tests/upgrade/README.md): a released broker stores a fixed
# set of events and serves four durable consumers, each stopped part-way; the broker is
# stopped cleanly and its data directory packed, with what that version's own CLI says
# about it (every event, one kelurahan's share, the consumers' positions).
#
#   tests/upgrade/make_fixture.sh BIN_DIR OUT_DIR COMMIT
#
# BIN_DIR holds the kolabus-broker and kolabus built from COMMIT (recorded in OUT_DIR);
# the schemas of COMMIT must be in schemas/COMMIT/ beside this script. Loopback only, a port chosen
# by the broker. Deterministic apart from broker times (received_at, audit times).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$1" && pwd)
out=$2
commit=$3
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
broker=
trap '[ -n "$broker" ] && kill -TERM "$broker" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"

start_broker() {
  rm -f "$work/endpoint"
  "$bin/kolabus-broker" --dev --data-dir "$work/data" --endpoint 'tcp://127.0.0.1:*' \
    --endpoint-file "$work/endpoint" --log-level warn 2>>"$work/broker.log" &
  broker=$!
  for _ in $(seq 1 200); do [ -s "$work/endpoint" ] && break; sleep 0.1; done
  export KOLABUS_BROKER=$(cat "$work/endpoint")
}
stop_broker() { kill -TERM "$broker"; wait "$broker" || true; broker=; }

# 300 events, 40 % of them in kecamatan Medan Kota (127101), dated before 2026-11-19.
"$bin/kolabus" gen --count 300 --seed 20261127 --now 1795000000000 \
  --focus 127101 --focus-share 0.4 > events.jsonl
head -n 250 events.jsonl > first.jsonl
kt() { "$bin/kolabus" tail --inbox "$work/inbox-$1" --consumer "$@" --json > /dev/null; }

# Session 1: 250 events; consumers, each acknowledging the events it prints, stopped
# after --count of them (what was delivered beyond that stays unacknowledged).
start_broker
"$bin/kolabus" publish --outbox "$work/outbox" --quiet first.jsonl
kt kel-pasar-baru --regions 1271011001 --start earliest --count 2 --timeout 3
kt kec-medan-kota --regions 127101 --start earliest --count 20 --timeout 3
kt medan-deaths --kinds death --regions 1271 --start earliest --count 10 --timeout 3
kt medan-all --regions 1271 --start earliest --count 150 --timeout 3
# A consumer with a dead letter and acknowledgements above its floor (old_consumer.py),
# speaking the release's protocol through Python code generated from its schemas.
flatc --python -o "$work/py" "$here/schemas/$commit"/*.fbs
/usr/bin/python3 "$here/old_consumer.py" --schemas "$work/py" --endpoint "$KOLABUS_BROKER" \
  > "$out/kec-dead.json"
stop_broker

# Session 2: the restart replays the WAL into table files, so the fixture has both.
# The whole file again: 250 duplicates, 50 new events.
start_broker
"$bin/kolabus" publish --outbox "$work/outbox" --quiet events.jsonl
kt kec-medan-kota --regions 127101 --count 5 --timeout 3
kt sumut-new --regions 12 --start latest --timeout 1 || true

"$bin/kolabus" consumers --json > "$out/consumers.json"
"$bin/kolabus" dlq list --json > "$out/dead-letters.jsonl"
"$bin/kolabus" replay --from 1 --json > "$out/events.jsonl"
"$bin/kolabus" replay --from 1 --regions 1271011001 --json > "$out/kel-pasar-baru.jsonl"
echo "$commit" > "$out/commit.txt"
# The audit chain's head, for releases that keep one: an anchor the upgraded chain must hold.
rm -f "$out/audit-head.json"
if "$bin/kolabus" --help | grep -q '^  audit '; then
  "$bin/kolabus" audit verify --json > "$out/audit-head.json"
fi

stop_broker
rm -f data/LOG data/LOG.old.*  # RocksDB's own diagnostics, not data
tar -C "$work" --owner=0 --group=0 --sort=name -czf "$out/data.tar.gz" data
ls -l "$out"
