#!/usr/bin/env python3
"""Splits end-to-end latency into its stages, from the traces of latency-trace.patch.

Usage: breakdown.py PREFIX [PREFIX ...]
Each PREFIX names one round: PREFIX-bench.N (the harness: event k, its scheduled time,
when the publisher sent it, when the subscriber's handler saw it) and PREFIX-broker
(the broker or the naive loop: sequence, drain start, read, appended, sync asked
(negative: synced inline), synced, delivery sent). All times are CLOCK_MONOTONIC in ns,
one clock for every process on the machine. The measured events are the last
len(bench) sequences of the broker's trace (the warm-up's come first). Prints each
stage's median over the rounds of its p50, p90, p99 and mean, in microseconds, and the
share of events over 0.5, 1 and 2 ms.
"""
import glob
import statistics
import sys

STAGES = ['scheduled->sent', 'sent->read', 'read->appended', 'appended->synced',
          'synced->delivery sent', 'delivery sent->handler', 'total']


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def stages(prefix):
    bench_file = sorted(glob.glob(prefix + '-bench.*'))[-1]
    bench = [list(map(int, line.split())) for line in open(bench_file)]
    broker = sorted(list(map(int, line.split())) for line in open(prefix + '-broker'))
    broker = broker[-len(bench):]
    out = {s: [] for s in STAGES}
    for (_, sched, sent, handler), (_, _, read, app, _, synced, sent_out) in zip(bench, broker):
        if handler < 0:
            continue  # never received (none were lost in the runs reported)
        synced = synced or sent_out  # delivered by a scan before the loop took the sync
        values = [sent - sched, read - sent, app - read, synced - app, sent_out - synced,
                  handler - sent_out, handler - sched]
        for stage, v in zip(STAGES, values):
            out[stage].append(v / 1000)
    return out


def main(prefixes):
    rounds = [stages(p) for p in prefixes]
    print('%d round(s); median over rounds, microseconds' % len(rounds))
    print('%-24s %8s %8s %8s %8s' % ('stage', 'p50', 'p90', 'p99', 'mean'))
    for s in STAGES:
        cols = [statistics.median(pct(r[s], q) for r in rounds) for q in (.5, .9, .99)]
        mean = statistics.median(sum(r[s]) / len(r[s]) for r in rounds)
        print('%-24s %8.0f %8.0f %8.0f %8.0f' % (s, *cols, mean))
    for t in (500, 1000, 2000):
        share = statistics.median(
            sum(1 for v in r['total'] if v > t) / len(r['total']) * 100 for r in rounds)
        print('events over %d us: %.2f %%' % (t, share))


if __name__ == '__main__':
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
