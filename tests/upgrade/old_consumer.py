#!/usr/bin/python3
"""A consumer that leaves a dead letter and acknowledgements above its ack floor.

Used by make_fixture.sh with Python code that flatc generated from the release's own
schemas, against that release's broker: `kolabus tail` acknowledges every event in
order and never rejects one, so without this a fixture would hold neither.

It subscribes `kec-dead` (kecamatan Medan Kota, 127101, from the start) with a window
of 6, takes the first six deliveries, rejects the first (a dead letter), acknowledges
the third and fifth, leaves the rest unacknowledged and unsubscribes. It prints what it
did as one JSON object.

    old_consumer.py --schemas GEN_DIR --endpoint tcp://127.0.0.1:PORT
"""
import argparse
import json
import os
import sys

P = argparse.ArgumentParser()
P.add_argument("--schemas", required=True, help="flatc --python output of the schemas")
P.add_argument("--endpoint", required=True)
ARGS = P.parse_args()
sys.path.insert(0, os.path.abspath(ARGS.schemas))

import flatbuffers  # noqa: E402
import zmq  # noqa: E402
from kolabus.protocol import (  # noqa: E402
    Ack,
    Command,
    ConsumerConfig,
    Delivery,
    Filter,
    Ping,
    Reject,
    Reply,
    Request,
    Response,
    StartPolicy,
    Subscribe,
    Unsubscribe,
)

NAME = "kec-dead"
REASON = "upgrade fixture: rejected on purpose"


def request(b, corr, kind, command):
    Request.Start(b)
    Request.AddVersion(b, 1)
    Request.AddCorr(b, corr)
    Request.AddCommandType(b, kind)
    Request.AddCommand(b, command)
    b.Finish(Request.End(b), file_identifier=b"KLRQ")
    return bytes(b.Output())


def subscribe(corr):
    b = flatbuffers.Builder(256)
    region = b.CreateString("127101")
    Filter.StartRegionsVector(b, 1)
    b.PrependUOffsetTRelative(region)
    regions = b.EndVector()
    Filter.Start(b)
    Filter.AddRegions(b, regions)
    flt = Filter.End(b)
    name = b.CreateString(NAME)
    ConsumerConfig.Start(b)
    ConsumerConfig.AddName(b, name)
    ConsumerConfig.AddFilter(b, flt)
    ConsumerConfig.AddStart(b, StartPolicy.StartPolicy.Earliest)
    config = ConsumerConfig.End(b)
    Subscribe.Start(b)
    Subscribe.AddConfig(b, config)
    Subscribe.AddWindow(b, 6)
    return request(b, corr, Command.Command.Subscribe, Subscribe.End(b))


def reject(corr, sequence):
    b = flatbuffers.Builder(256)
    name, reason = b.CreateString(NAME), b.CreateString(REASON)
    Reject.Start(b)
    Reject.AddConsumer(b, name)
    Reject.AddSequence(b, sequence)
    Reject.AddReason(b, reason)
    return request(b, corr, Command.Command.Reject, Reject.End(b))


def ack(corr, sequences):
    b = flatbuffers.Builder(256)
    name = b.CreateString(NAME)
    Ack.StartSequencesVector(b, len(sequences))
    for s in reversed(sequences):
        b.PrependUint64(s)
    seqs = b.EndVector()
    Ack.Start(b)
    Ack.AddConsumer(b, name)
    Ack.AddSequences(b, seqs)
    return request(b, corr, Command.Command.Ack, Ack.End(b))


def ping(corr):
    b = flatbuffers.Builder(64)
    Ping.Start(b)
    return request(b, corr, Command.Command.Ping, Ping.End(b))


def unsubscribe(corr):
    b = flatbuffers.Builder(64)
    name = b.CreateString(NAME)
    Unsubscribe.Start(b)
    Unsubscribe.AddConsumer(b, name)
    return request(b, corr, Command.Command.Unsubscribe, Unsubscribe.End(b))


sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.RCVTIMEO, 20000)
sock.setsockopt(zmq.LINGER, 1000)
sock.connect(ARGS.endpoint)


def receive():
    """The next Response; a Delivery (corr 0) is noted in DELIVERED and gives None."""
    r = Response.Response.GetRootAs(sock.recv(), 0)
    if r.Corr() == 0 and r.ReplyType() == Reply.Reply.Delivery:
        d = Delivery.Delivery()
        d.Init(r.Reply().Bytes, r.Reply().Pos)
        DELIVERED.append(d.Sequence())
        return None
    return r


def answer(corr):
    """The answer with this corr, taking deliveries meanwhile."""
    while True:
        r = receive()
        if r is None:
            continue
        if r.Corr() != corr:
            sys.exit(f"unexpected reply type {r.ReplyType()} corr {r.Corr()}")
        return r


DELIVERED = []
sock.send(subscribe(1))
if answer(1).ReplyType() != Reply.Reply.Subscribed:
    sys.exit("Subscribe was refused")
while len(DELIVERED) < 6:
    if receive() is not None:
        sys.exit("an answer nobody asked for")
first = DELIVERED[:6]
sock.send(reject(2, first[0]))
sock.send(ack(3, [first[2], first[4]]))
sock.send(ping(4))  # answered after the two above are done
if answer(4).ReplyType() != Reply.Reply.Pong:
    sys.exit("no Pong")
sock.send(unsubscribe(5))
answer(5)
print(json.dumps({"consumer": NAME, "rejected": first[0], "reason": REASON,
                  "acked": [first[2], first[4]], "unacked": [first[1], first[3], first[5]]}))
