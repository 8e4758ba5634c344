#!/usr/bin/env python3
"""The kolabus demo: a broker and the adapters of Kota Medan on 127.0.0.1.

Run by scripts/demo after it has installed and built everything. Starts the broker,
a stand-in for the agencies' HTTP systems and one kolabus-adapter process per agency
of examples/medan/, feeds the civil registry's spool with synthetic but valid events,
shows where they arrive (every webhook signed, a forged request refused), stops one
kelurahan's adapter, publishes more, restarts it and shows it catching up. Everything it
starts is stopped when it ends.
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import argparse
import ssl
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join("var", "demo")  # --dir changes it
BROKER = ADAPTER = KOLABUS = RECEIVER = ""  # in --build
MEDAN = os.path.join(ROOT, "examples", "medan")

# The offices, what they ask for, and how to count what reached them.
SINKS = [
    # (agency config, consumer, kinds, regions, how it receives)
    ("dinkes", "dinkes-births", ["birth"], ["1271"], ("webhook", "/dinkes/births")),
    ("dinsos", "dinsos-deaths", ["death"], ["1271"], ("webhook", "/dinsos/deaths")),
    ("kpu", "kpu-voters", ["death", "move"], ["1271"], ("webhook", "/kpu/voters")),
    ("kel-pasar-baru", "kel-pasar-baru", [], ["1271011001"], ("ward", None)),
    ("kel-pusat-pasar", "kel-pusat-pasar", [], ["1271011002"], ("ward", None)),
    ("kec-medan-kota", "kec-medan-kota", [], ["127101"], ("ward", None)),
]
SOURCES = ["disdukcapil", "rsud-pirngadi"]
WEBHOOKS = [(s[1], s[4][1]) for s in SINKS if s[4][0] == "webhook"]  # (consumer, path)
# Requests the demo itself sends to the receiver without kolabus's secret (step 7): each
# must be answered 401, and only those.
FORGED = {}
# Agency names (as in examples/agencies.toml and each config's [agency] name).
AGENCIES = ["disdukcapil-medan", "rsud-pirngadi", "dinkes-medan", "dinsos-medan", "kpu-medan",
            "kel-pasar-baru", "kel-pusat-pasar", "kec-medan-kota"]

procs = {}
env = dict(os.environ)


def say(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}; logs are in {DEMO}/logs")


def start(name, args):
    log = open(os.path.join(DEMO, "logs", name + ".log"), "a")
    procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stop(name):
    p = procs.pop(name, None)
    if p is None:
        return
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run(args):
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)


def kolabus_json(*args):
    r = run([KOLABUS, *args, "--json"])
    if r.returncode not in (0, 1):
        raise SystemExit(f"demo: kolabus {' '.join(args)} failed: {r.stderr.strip()}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def expected(kinds, regions):
    args = ["replay", "--from", "1"]
    if kinds:
        args += ["--kinds", ",".join(kinds)]
    if regions:
        args += ["--regions", ",".join(regions)]
    return sum(1 for o in kolabus_json(*args) if "sequence" in o)


def receiver_stats():
    with urllib.request.urlopen(f"{env['KOLABUS_RECEIVER']}/stats", timeout=5) as r:
        return json.loads(r.read())


def ward_report(agency):
    r = run([ADAPTER, "report", "--config", os.path.join(MEDAN, agency + ".toml"),
             "--from", "2020-01-01", "--to", "2030-12-31", "--json"])
    if r.returncode != 0:
        raise SystemExit(f"demo: report of {agency} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def log_count():
    return sum(1 for o in kolabus_json("replay", "--from", "1", "--regions", "1271")
               if "sequence" in o)


def consumers():
    return {c["name"]: c for c in kolabus_json("consumers")}


def settled():
    cs = consumers()
    return all(s[1] in cs and cs[s[1]]["lag"] == 0 and cs[s[1]]["pending"] == 0 for s in SINKS
               if s[0] in procs)


def drop(spool, name, text):
    """Writes a file into a spool directory the way an export job should: whole, then renamed."""
    d = os.path.join(DEMO, "spool", spool)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, "." + name + ".part")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(d, name))


def table():
    stats = receiver_stats()
    rows = []
    for agency, consumer, kinds, regions, (how, path) in SINKS:
        want = expected(kinds, regions)
        signed_ok = True
        if how == "webhook":
            s = stats.get(path, {})
            got, extra = s.get("distinct", 0), f"{s.get('refused', 0)} retried 503s"
            unauthorised = s.get("unauthorised", 0)
            extra += f", {unauthorised} refused 401 (forged)" if unauthorised else ", all signed"
            signed_ok = unauthorised == FORGED.get(path, 0)
        else:
            rep = ward_report(agency)
            got = rep["rows"]
            extra = f"{rep['foreign']} foreign"
        ok = "ok" if got == want and "1 foreign" not in extra and signed_ok else "MISMATCH"
        rows.append((agency, ",".join(kinds) or "all", ",".join(regions), want, got, extra, ok))
    head = ("office", "kinds", "regions", "in log", "received", "notes", "")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    return all(r[-1] == "ok" for r in rows)


def main():
    global DEMO, BROKER, ADAPTER, KOLABUS, RECEIVER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEMO, help="state and logs (wiped first; default %(default)s)")
    parser.add_argument("--build", default=os.path.join(ROOT, "build"), help="the build tree")
    args = parser.parse_args()
    DEMO = os.path.abspath(args.dir)
    BROKER = os.path.join(args.build, "broker", "kolabus-broker")
    ADAPTER = os.path.join(args.build, "adapters", "runner", "kolabus-adapter")
    KOLABUS = os.path.join(args.build, "tools", "kolabus")
    RECEIVER = os.path.join(args.build, "tools", "kolabus-receiver")
    # The demo's events are synthetic, but its files are made as real ones must be: its
    # logs, the receiver's files and everything below DEMO are its user's alone (the
    # broker and the adapters set umask 077 themselves).
    os.umask(0o077)
    shutil.rmtree(DEMO, ignore_errors=True)
    os.makedirs(os.path.join(DEMO, "logs"))
    t0 = time.time()

    say("1. Keys: a CURVE key pair for the broker and for each agency; the agency registry "
        "(examples/agencies.toml) lists their public keys and grants")
    keys = os.path.join(DEMO, "keys")
    for name in ["broker"] + AGENCIES:
        r = run([KOLABUS, "keygen", name, "--dir", keys])
        if r.returncode != 0:
            raise SystemExit(f"demo: kolabus keygen {name} failed: {r.stderr.strip()}")
    registry = os.path.join(DEMO, "agencies.toml")  # its keys/NAME.pub paths: keys beside it
    shutil.copy(os.path.join(ROOT, "examples", "agencies.toml"), registry)
    print(f"{len(AGENCIES)} agencies + the broker, keys in {keys}")
    # A signing secret per webhook endpoint (the configs' secret_file), which the agency's
    # system gets too: here the stand-in receiver.
    secrets = os.path.join(DEMO, "secrets")
    for consumer, _ in WEBHOOKS:
        r = run([KOLABUS, "keygen", consumer, "--webhook", "--dir", secrets])
        if r.returncode != 0:
            raise SystemExit(f"demo: kolabus keygen {consumer} --webhook failed: {r.stderr.strip()}")
    print(f"{len(WEBHOOKS)} webhook signing secrets (whsec_, mode 0600), in {secrets}")

    say("2. Start the broker (CURVE on; RocksDB log under var/demo/broker) and a stand-in "
        "for the agencies' HTTP systems")
    endpoint_file = os.path.join(DEMO, "broker.endpoint")
    start("broker", [BROKER, "--config", "examples/broker.toml", "--key",
                     os.path.join(keys, "broker.key"), "--agencies", registry,
                     "--data-dir",
                     os.path.join(DEMO, "broker"), "--endpoint", "tcp://127.0.0.1:*",
                     "--endpoint-file", endpoint_file])
    wait_for("the broker", lambda: os.path.exists(endpoint_file))
    env["KOLABUS_BROKER"] = open(endpoint_file).read().strip()
    env["KOLABUS_OUTBOX"] = os.path.join(DEMO, "cli-outbox")
    # The operator's commands below run as the civil registry, which may operate.
    env["KOLABUS_KEY"] = os.path.join(keys, "disdukcapil-medan.key")
    env["KOLABUS_SERVER_KEY"] = os.path.join(keys, "broker.pub")
    port_file = os.path.join(DEMO, "receiver.port")
    # The receiver checks each webhook's signature with the same secret files and
    # answers 401 to a request without a valid one.
    signed_paths = [a for consumer, path in WEBHOOKS
                    for a in ("--secret", f"{path}={os.path.join(secrets, consumer + '.whsec')}")]
    start("receiver", [RECEIVER, "--port-file", port_file, "--dir",
                       os.path.join(DEMO, "receiver"), "--fail-first", "2", *signed_paths])
    wait_for("the receiver", lambda: os.path.exists(port_file))
    env["KOLABUS_RECEIVER"] = "http://127.0.0.1:" + open(port_file).read().strip()
    env["KOLABUS_DEMO"] = DEMO
    env["KOLABUS_GATEWAY_PORT"] = str(free_port())
    gateway_credentials()
    print(f"broker {env['KOLABUS_BROKER']}, agency systems {env['KOLABUS_RECEIVER']}")

    say("3. Start one adapter process per agency (examples/medan/*.toml)")
    for agency in SOURCES + [s[0] for s in SINKS]:
        start(agency, [ADAPTER, "--config", os.path.join(MEDAN, agency + ".toml")])
        print(f"  {agency}")

    say("4. Disdukcapil exports 400 events (kolabus JSON Lines) and a SIAK CSV of births; "
        "the hospital posts births to its gateway")
    gen = run([KOLABUS, "gen", "--count", "400", "--seed", "11", "--focus", "127101",
               "--focus-share", "0.4"])
    drop("disdukcapil", "export-1.jsonl", gen.stdout)
    with open(os.path.join(MEDAN, "siak-births.csv")) as f:
        drop("siak-births", "siak-births-1.csv", f.read())
    post_hospital_births()
    # 400 + the SIAK file's 6 good rows (2 are refused) + the hospital's 3.
    wait_for("the 409 events in the log", lambda: log_count() == 409, 60)
    wait_for("every office to have every event", settled, 60)
    rejects = os.path.join(DEMO, "spool", "siak-births", "rejects",
                           "siak-births-1.csv.rejects.jsonl")
    print("spool: siak-births-1.csv: 6 births queued; refused lines, kept in rejects/ with "
          "their reasons:")
    with open(rejects) as f:
        for line in f:
            print("  " + json.loads(line)["reason"])

    say("5. Where the events went: each office has exactly the events of its filter")
    ok = table()

    say("6. Each agency only what its grant allows: Pasar Baru's key asks for Pusat Pasar's "
        "events")
    r = run([KOLABUS, "tail", "--consumer", "peek", "--regions", "1271011002", "--start",
             "earliest", "--timeout", "2", "--inbox", os.path.join(DEMO, "peek-inbox"), "--key",
             os.path.join(keys, "kel-pasar-baru.key")])
    print(f"kolabus tail --regions 1271011002 (as kel-pasar-baru) -> exit {r.returncode}: "
          f"{r.stderr.strip()}")
    ok = ok and r.returncode != 0 and "NotAuthorised" in r.stderr

    say("7. Only kolabus can deliver to an agency: every webhook request is signed "
        "(Standard Webhooks); one signed with another secret is refused")
    ok = forged_request() and ok

    say("8. Kelurahan Pusat Pasar's adapter stops; 150 more events are published")
    stop("kel-pusat-pasar")
    gen = run([KOLABUS, "gen", "--count", "150", "--seed", "12", "--focus", "1271011002",
               "--focus-share", "0.3"])
    drop("disdukcapil", "export-2.jsonl", gen.stdout)
    wait_for("the 559 events in the log", lambda: log_count() == 559, 60)
    wait_for("the other offices", settled, 60)
    c = consumers()["kel-pusat-pasar"]
    print(f"kel-pusat-pasar is behind: lag {c['lag']} events, {c['clients']} clients attached")

    say("9. It starts again and catches up from where it stopped")
    start("kel-pusat-pasar", [ADAPTER, "--config", os.path.join(MEDAN, "kel-pusat-pasar.toml")])
    wait_for("kel-pusat-pasar to catch up",
             lambda: "kel-pusat-pasar" in consumers() and settled(), 60)
    print(run([KOLABUS, "consumers"]).stdout)

    say("10. The audit chain: every publish, delivery and refusal, each record hashed into "
        "the next; and a resident asks who received their data")
    r = run([KOLABUS, "audit", "verify"])
    print(r.stdout.strip().splitlines()[0] if r.stdout.strip() else r.stderr.strip())
    ok = ok and r.returncode == 0
    births = [e for e in kolabus_json("replay", "--from", "1", "--regions", "1271011001",
                                      "--kinds", "birth")]
    if births:
        nik = births[0]["event"]["payload"]["mother_nik"]
        r = run([KOLABUS, "audit", "person", nik])
        print(f"kolabus audit person {nik}  (a mother in Pasar Baru)")
        print(r.stdout)
        ok = ok and r.returncode == 0 and "kel-pasar-baru" in r.stdout

    say("11. Summary")
    ok = table() and ok
    print(run([ADAPTER, "report", "--config", os.path.join(MEDAN, "kec-medan-kota.toml"),
               "--from", "2020-01-01", "--to", "2030-12-31"]).stdout)
    print(f"demo finished in {time.time() - t0:.0f} s: {'every office got exactly its events' if ok else 'MISMATCH'}; "
          f"logs and data in {DEMO}/")
    return 0 if ok else 1


def forged_request():
    """Replays a delivered body to Dinkes's endpoint, signed with a secret that is not the
    endpoint's: the receiver, like a real agency system, must answer 401."""
    path = "/dinkes/births"
    with open(os.path.join(DEMO, "receiver", path[1:].replace("/", "_") + ".jsonl"), "rb") as f:
        body = f.readline().rstrip(b"\n")
    msg_id = json.loads(body)["event"]["id"]
    timestamp = str(int(time.time()))
    key = os.urandom(32)
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    req = urllib.request.Request(
        env["KOLABUS_RECEIVER"] + path, data=body, method="POST",
        headers={"Content-Type": "application/json", "webhook-id": msg_id,
                 "webhook-timestamp": timestamp,
                 "webhook-signature": "v1," + base64.b64encode(mac).decode()})
    FORGED[path] = FORGED.get(path, 0) + 1
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, answer = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, answer = e.code, e.read().decode()
    print(f"POST {path} (a delivered body, signed with another secret) -> {status} {answer}")
    return status == 401


GATEWAY_TOKEN = ""  # the hospital system's bearer token, made by gateway_credentials()


def gateway_credentials():
    """The hospital gateway's TLS certificate and key (self-signed, for 127.0.0.1) and its
    client's bearer token, as an operator makes them (docs/ADAPTERS.md, runbook)."""
    global GATEWAY_TOKEN
    d = os.path.join(DEMO, "gateway")
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, "rsud-pirngadi.crt"), os.path.join(d, "rsud-pirngadi.key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", key, "-out", cert], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"demo: openssl req failed: {r.stderr.strip()}")
    os.chmod(key, 0o600)
    made = json.loads(run([KOLABUS, "gateway-token", "simrs-pirngadi", "--json"]).stdout)
    GATEWAY_TOKEN = made["token"]
    env["KOLABUS_GATEWAY_TOKEN_SHA256"] = made["sha256"]
    print(f"the hospital's gateway: certificate {cert}, a token for its system "
          f"'simrs-pirngadi' (only the SHA-256 is in the config)")


def post_hospital_births():
    gen = run([KOLABUS, "gen", "--count", "3", "--seed", "13", "--kind", "birth"])
    body = "[" + ",".join(l for l in gen.stdout.splitlines() if l.strip()) + "]"
    url = f"https://127.0.0.1:{env['KOLABUS_GATEWAY_PORT']}/v1/events"
    tls = ssl.create_default_context(cafile=os.path.join(DEMO, "gateway", "rsud-pirngadi.crt"))

    def up():
        try:
            urllib.request.urlopen(url.replace("/v1/events", "/v1/ready"), timeout=1,
                                   context=tls)
            return True
        except OSError:
            return False

    wait_for("the hospital's gateway", up)
    # Without the token: refused.
    anonymous = urllib.request.Request(url, data=body.encode(), method="POST",
                                       headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(anonymous, timeout=5, context=tls)
        raise SystemExit("demo: the gateway accepted a POST without a token")
    except urllib.error.HTTPError as e:
        print(f"gateway: POST /v1/events without a token -> {e.code} {e.read().decode()}")
        if e.code != 401:
            raise SystemExit("demo: want 401 without a token")
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer " + GATEWAY_TOKEN})
    with urllib.request.urlopen(req, timeout=5, context=tls) as r:
        print(f"gateway: POST /v1/events (HTTPS, simrs-pirngadi's token) -> {r.status} "
              f"{r.read().decode()}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for name in list(procs):
            stop(name)
