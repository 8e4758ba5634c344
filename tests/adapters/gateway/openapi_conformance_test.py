#!/usr/bin/python3
"""The HTTP gateway against its contract: requests made from docs/openapi.yaml, every
answer checked against the same document.

Starts a kolabus-broker (--dev) and a kolabus-adapter whose [[gateway]] has TLS (a
certificate the openssl command makes, as the demo does) and one client token (made by
`kolabus gateway-token`). Then, for every operation the document declares, it sends:
  - valid requests: the operation's examples (times moved to now, fresh ids) and
    instances built from its request schema;
  - invalid bodies: each required property left out, each property given a value of
    the wrong type, an unknown property, and bodies that are not JSON, not UTF-8,
    truncated, empty, too deep, or of the wrong content type;
  - every method the path does not declare;
  - no token and a wrong token, where the operation has security;
and checks each answer: its status is one the operation declares (405 with the Allow
header of components.responses.MethodNotAllowed for an undeclared method), a valid
request got a 2xx and an invalid one a 4xx, the Content-Type is the declared one, the
body validates against the declared schema (jsonschema, refs resolved in the
document), and every header the response declares as required is there.

It also starts the adapter with configurations it must refuse: a non-loopback `listen`
without TLS and tokens, and a TLS key that others can read.

Needs Debian's python3-yaml and python3-jsonschema (scripts/setup installs them).
Prints one line per failed check, then `N passed, M failed`; exits 0 only if none failed.
"""

import argparse
import copy
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid

import jsonschema
import yaml

STARTUP_TIMEOUT_S = 30.0
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="docs/openapi.yaml")
    p.add_argument("--broker", required=True, help="path to kolabus-broker")
    p.add_argument("--adapter", required=True, help="path to kolabus-adapter")
    p.add_argument("--kolabus", required=True, help="path to kolabus (the CLI)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    return p.parse_args()


ARGS = parse_args()
SPEC = yaml.safe_load(open(ARGS.spec, encoding="utf-8"))
RESOLVER = jsonschema.RefResolver.from_schema(SPEC)
passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}", flush=True)
    return ok


def deref(node):
    while isinstance(node, dict) and "$ref" in node:
        _, node = RESOLVER.resolve(node["$ref"])
    return node


def schema_errors(schema, instance):
    validator = jsonschema.Draft4Validator(schema, resolver=RESOLVER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(instance)]


# ---- instances from schemas ------------------------------------------------------

def instance_of(schema, depth=0):
    """A value that validates against `schema`, built from its properties (examples at
    the leaves: patterns are not generated)."""
    schema = deref(schema)
    if "allOf" in schema:
        out = {}
        for part in schema["allOf"]:
            v = instance_of(part, depth + 1)
            if isinstance(v, dict):
                out.update(v)
            else:
                return v
        return out
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return instance_of(schema[key][0], depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    t = schema.get("type")
    if t == "object":
        if depth > 6 and "example" in schema:
            return copy.deepcopy(schema["example"])
        props = schema.get("properties", {})
        return {k: instance_of(v, depth + 1) for k, v in props.items()
                if k in schema.get("required", []) or "example" in deref(v) or depth < 2}
    if t == "array":
        n = max(schema.get("minItems", 1), 1)
        return [instance_of(schema["items"], depth + 1) for _ in range(n)]
    if "example" in schema:
        return copy.deepcopy(schema["example"])
    if t == "string":
        return "x"
    if t == "integer":
        return schema.get("minimum", 1)
    if t == "boolean":
        return False
    if t == "number":
        return 1.0
    return None


def wrong_type_value(schema):
    schema = deref(schema)
    t = schema.get("type")
    if "allOf" in schema:
        t = deref(schema["allOf"][0]).get("type")
    return {"string": 12345, "integer": "not a number", "number": "nan", "boolean": "yes",
            "array": {"not": "an array"}, "object": "not an object"}.get(t, [1, 2])


# ---- processes -----------------------------------------------------------------

class Stack:
    """A broker and an adapter hosting one TLS gateway with one client token."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.cert = os.path.join(tmp, "gateway.crt")
        self.key = os.path.join(tmp, "gateway.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", self.key, "-out", self.cert],
                       check=True, capture_output=True)
        os.chmod(self.key, 0o600)
        made = subprocess.run([ARGS.kolabus, "gateway-token", "conformance", "--json"],
                              check=True, capture_output=True, text=True)
        tok = json.loads(made.stdout)
        self.token, self.token_entry = tok["token"], tok["toml"]
        self.broker_endpoint = self.start_broker()
        self.log = os.path.join(tmp, "adapter.log")
        self.config = self.write_config("agency.toml", "127.0.0.1:0", tls=True, tokens=True)
        self.adapter = self.spawn([ARGS.adapter, "--config", self.config], self.log)
        self.port = self.wait_for_port()
        self.ctx = ssl.create_default_context(cafile=self.cert)

    def spawn(self, args, log):
        p = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start_broker(self):
        endpoint_file = os.path.join(self.tmp, "broker.endpoint")
        self.broker = self.spawn([ARGS.broker, "--dev", "--data-dir",
                                  os.path.join(self.tmp, "broker"), "--endpoint",
                                  "tcp://127.0.0.1:*", "--endpoint-file", endpoint_file,
                                  "--log-level", "warn"], os.path.join(self.tmp, "broker.log"))
        deadline = time.time() + STARTUP_TIMEOUT_S
        while time.time() < deadline:
            if os.path.exists(endpoint_file) and open(endpoint_file).read().strip():
                return open(endpoint_file).read().strip()
            time.sleep(0.05)
        raise SystemExit("the broker did not start")

    def write_config(self, name, listen, tls, tokens, key=None):
        # Each configuration its own data_dir: the running adapter holds its outbox.
        data_dir = os.path.join(self.tmp, "agency-" + name.split(".")[0])
        lines = ["[agency]", 'name = "rsud-pirngadi"', f'broker = "{self.broker_endpoint}"',
                 f'data_dir = "{data_dir}"', "", "[[gateway]]",
                 f'listen = "{listen}"']
        if tls:
            lines += [f'tls_cert = "{self.cert}"', f'tls_key = "{key or self.key}"']
        if tokens:
            lines += [f"tokens = [{self.token_entry}]"]
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def wait_for_port(self):
        deadline = time.time() + STARTUP_TIMEOUT_S
        while time.time() < deadline:
            text = open(self.log, errors="replace").read()
            m = re.search(r"listening on https://127\.0\.0\.1:(\d+)", text)
            if m:
                return int(m.group(1))
            if self.adapter.poll() is not None:
                raise SystemExit(f"kolabus-adapter exited: {text}")
            time.sleep(0.05)
        raise SystemExit("the gateway did not start")

    def request(self, method, path, body=None, headers=None, token="valid"):
        headers = dict(headers or {})
        if token == "valid":
            headers["Authorization"] = "Bearer " + self.token
        elif token:
            headers["Authorization"] = "Bearer " + token
        if isinstance(body, str):
            body = body.encode("utf-8")
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# ---- checking answers ------------------------------------------------------------

def check_answer(what, operation, answer, expect):
    """`expect`: "2xx", "4xx", "declared" (any declared status) or the status wanted."""
    status, headers, body = answer
    responses = operation.get("responses", {})
    key = str(status)
    declared = responses.get(key) or responses.get(key[0] + "XX") or responses.get("default")
    if not check(declared is not None, f"{what}: status {status} is not declared "
                 f"(declared: {sorted(responses)}); body {body[:200]!r}"):
        return None
    if expect == "2xx":
        check(200 <= status < 300, f"{what}: a valid request got {status}: {body[:300]!r}")
    elif expect == "4xx":
        check(400 <= status < 500, f"{what}: an invalid request got {status}: {body[:300]!r}")
    elif expect != "declared":
        check(status == expect, f"{what}: want {expect}, got {status}: {body[:300]!r}")
    check_response(what, deref(declared), answer)
    return status


def check_response(what, declared, answer):
    status, headers, body = answer
    for name, h in declared.get("headers", {}).items():
        h = deref(h)
        if h.get("required"):
            check(name.lower() in headers, f"{what}: {status} lacks the header {name}")
    content = declared.get("content", {})
    if not content:
        return
    ctype = headers.get("content-type", "").split(";")[0].strip()
    if not check(ctype in content, f"{what}: Content-Type {ctype!r} is not one of {list(content)}"):
        return
    if ctype != "application/json" or not body:
        check(bool(body), f"{what}: {status} has an empty body")
        return
    try:
        doc = json.loads(body)
    except ValueError as e:
        check(False, f"{what}: the body is not JSON ({e}): {body[:200]!r}")
        return
    errors = schema_errors(content[ctype]["schema"], doc)
    check(not errors, f"{what}: {status} body does not match its schema: {errors[:3]} in {doc}")


def effective_security(operation):
    return operation.get("security", SPEC.get("security", []))


# ---- requests --------------------------------------------------------------------

def fresh(event, now_ms):
    """An example event with times in the recent past and a new id (if it had one)."""
    e = copy.deepcopy(event)

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k.endswith("_at") and isinstance(v, int):
                    node[k] = now_ms - 3_600_000
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(e)
    if isinstance(e, dict) and "id" in e:
        e["id"] = str(uuid7())
    return e


def uuid7():
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64 | (0b10 << 62) | (
        rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def request_examples(operation):
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    out = [(name, ex["value"]) for name, ex in content.get("examples", {}).items()]
    if "example" in content:
        out.append(("example", content["example"]))
    return out, content.get("schema")


def mutations(event_schema, event):
    """Bodies that break the Event schema, one way each."""
    schema = deref(event_schema)
    out = []
    for prop in schema.get("required", []):
        e = copy.deepcopy(event)
        e.pop(prop, None)
        out.append((f"without required {prop}", e))
    for prop, sub in schema.get("properties", {}).items():
        if prop in event:
            e = copy.deepcopy(event)
            e[prop] = wrong_type_value(sub)
            out.append((f"{prop} of the wrong type", e))
    e = copy.deepcopy(event)
    e["colour"] = "blue"
    out.append(("an unknown property", e))
    payload_schema = None
    for option in deref(schema["properties"]["payload"]).get("oneOf", []):
        if deref(option).get("description", "").lower().startswith("a " + event.get(
                "payload_type", "").lower()):
            payload_schema = deref(option)
    if payload_schema:
        for prop in payload_schema.get("required", []):
            e = copy.deepcopy(event)
            e["payload"].pop(prop, None)
            out.append((f"payload without required {prop}", e))
        for prop, sub in payload_schema.get("properties", {}).items():
            if prop in event["payload"]:
                e = copy.deepcopy(event)
                e["payload"][prop] = wrong_type_value(sub)
                out.append((f"payload.{prop} of the wrong type", e))
    return out


RAW_BAD_BODIES = [
    ("an empty body", b""),
    ("not JSON", b"{\"id\": "),
    ("not UTF-8", b"\xff\xfe"),
    ("a string holding 0xff", b"{\"source\": \"\xff\"}"),
    ("an empty array", b"[]"),
    ("a number", b"42"),
    ("1e400", b"1e400"),
    ("nested 10000 deep", b"[" * 10000 + b"]" * 10000),
    ("trailing garbage", b"{}}"),
]


def exercise(stack):
    now_ms = int(time.time() * 1000)
    accepted_ids = []
    for path, item in SPEC["paths"].items():
        declared_methods = [m.upper() for m in item if m.upper() in METHODS]
        for method in declared_methods:
            op = item[method.lower()]
            name = f"{method} {path}"
            secured = bool(effective_security(op))

            def concrete(p, value=None):
                if "{id}" in p:
                    return p.replace("{id}", value or (accepted_ids[0] if accepted_ids else
                                                       str(uuid7())))
                return p

            examples, body_schema = request_examples(op)
            if body_schema is not None:
                event_schema = deref(body_schema)["oneOf"][0]
                valid = [(f"example {n}", fresh(v, now_ms)) for n, v in examples]
                for what, body in valid:
                    ans = stack.request(method, path, json.dumps(body),
                                        {"Content-Type": "application/json"})
                    if check_answer(f"{name} {what}", op, ans, "2xx") == 202:
                        accepted_ids += json.loads(ans[2])["ids"]
                generated = instance_of(body_schema)
                check(not schema_errors(body_schema, generated),
                      f"{name}: the instance built from the schema does not validate")
                check_answer(f"{name} instance from the schema", op,
                             stack.request(method, path, json.dumps(generated),
                                           {"Content-Type": "application/json"}), "declared")
                birth = fresh(next(v for _, v in examples if isinstance(v, dict)
                                   and "payload" in v), now_ms)
                for what, body in mutations(event_schema, birth):
                    check_answer(f"{name} {what}", op,
                                 stack.request(method, path, json.dumps(body),
                                               {"Content-Type": "application/json"}), "4xx")
                for what, raw in RAW_BAD_BODIES:
                    check_answer(f"{name} {what}", op,
                                 stack.request(method, path, raw,
                                               {"Content-Type": "application/json"}), 400)
                check_answer(f"{name} as text/plain", op,
                             stack.request(method, path, json.dumps(birth),
                                           {"Content-Type": "text/plain"}), 415)
                too_many = [birth] * 1001
                check_answer(f"{name} an array over maxItems", op,
                             stack.request(method, path, json.dumps(too_many),
                                           {"Content-Type": "application/json"}), 400)
                if secured:
                    for label, token in (("no token", None), ("a wrong token", "kgw_wrong")):
                        ans = stack.request(method, path, json.dumps(birth),
                                            {"Content-Type": "application/json"}, token=token)
                        if check_answer(f"{name} with {label}", op, ans, 401) == 401:
                            check(ans[1].get("www-authenticate", "").startswith("Bearer"),
                                  f"{name} with {label}: no Bearer challenge")
            else:
                target = concrete(path)
                ans = stack.request(method, target)
                check_answer(f"{name} ({target})", op, ans, "2xx")
                if "{id}" in path:
                    for what, value, want in (("an unknown id", str(uuid7()), 404),
                                              ("not a UUID", "not-a-uuid", 400)):
                        check_answer(f"{name} {what}", op,
                                     stack.request(method, concrete(path, value)), want)
                if secured:
                    for label, token in (("no token", None), ("a wrong token", "kgw_wrong")):
                        check_answer(f"{name} with {label}", op,
                                     stack.request(method, target, token=token), 401)
                else:
                    check_answer(f"{name} without a token", op,
                                 stack.request(method, target, token=None), "2xx")
        # Methods the path does not declare: 405, as components.responses.MethodNotAllowed.
        not_allowed = deref(SPEC["components"]["responses"]["MethodNotAllowed"])
        for method in METHODS:
            if method in declared_methods:
                continue
            target = path.replace("{id}", accepted_ids[0] if accepted_ids else str(uuid7()))
            ans = stack.request(method, target, "{}", {"Content-Type": "application/json"})
            what = f"{method} {path} (undeclared)"
            if check(ans[0] == 405, f"{what}: want 405, got {ans[0]}"):
                check_response(what, not_allowed, ans)
                check(ans[1].get("allow") == ", ".join(declared_methods),
                      f"{what}: Allow is {ans[1].get('allow')!r}, the document declares "
                      f"{declared_methods}")

    # Every accepted id reaches a final status that matches EventStatus.
    get_status = SPEC["paths"]["/v1/events/{id}"]["get"]
    deadline = time.time() + 30
    pending = list(accepted_ids)
    while pending and time.time() < deadline:
        ans = stack.request("GET", "/v1/events/" + pending[0])
        if check_answer(f"GET status of {pending[0]}", get_status, ans, 200) is None:
            pending.pop(0)
            continue
        if json.loads(ans[2])["status"] != "queued":
            pending.pop(0)
        else:
            time.sleep(0.1)
    check(not pending, f"{len(pending)} accepted events still queued after 30 s")
    check(len(accepted_ids) >= 3, f"only {len(accepted_ids)} example events were accepted")

    # Not ready while the broker is down: 503 as declared.
    ready = SPEC["paths"]["/v1/ready"]["get"]
    stack.broker.send_signal(signal.SIGKILL)
    stack.broker.wait()
    deadline = time.time() + 15
    ans = None
    while time.time() < deadline:
        ans = stack.request("GET", "/v1/ready", token=None)
        if ans[0] == 503:
            break
        time.sleep(0.2)
    check_answer("GET /v1/ready with the broker down", ready, ans, 503)
    check_answer("GET /v1/health with the broker down",
                 SPEC["paths"]["/v1/health"]["get"], stack.request("GET", "/v1/health"), 200)


def refusals(stack):
    """Configurations the adapter must refuse at start, with a message and exit 2."""
    cases = [
        ("a non-loopback listen without TLS or tokens",
         stack.write_config("open.toml", "0.0.0.0:0", tls=False, tokens=False), "loopback"),
        ("a non-loopback listen with tokens but no TLS",
         stack.write_config("notls.toml", "0.0.0.0:0", tls=False, tokens=True), "missing TLS"),
    ]
    loose_key = os.path.join(stack.tmp, "loose.key")
    shutil.copy(stack.key, loose_key)
    os.chmod(loose_key, 0o644)
    cases.append(("a TLS key that others can read",
                  stack.write_config("loose.toml", "127.0.0.1:0", tls=True, tokens=True,
                                     key=loose_key), "chmod 600"))
    for what, config, needle in cases:
        try:
            r = subprocess.run([ARGS.adapter, "--config", config], capture_output=True,
                               text=True, timeout=30)
        except subprocess.TimeoutExpired:
            check(False, f"{what}: kolabus-adapter started instead of refusing")
            continue
        out = r.stdout + r.stderr
        check(r.returncode == 2, f"{what}: exit {r.returncode}, want 2: {out.strip()}")
        check(needle in out, f"{what}: the message does not say {needle!r}: {out.strip()}")


def main():
    tmp = tempfile.mkdtemp(prefix="kolabus-openapi-")
    stack = None
    try:
        stack = Stack(tmp)
        exercise(stack)
        refusals(stack)
        log = open(stack.log, errors="replace").read()
        check(re.search(r"listening on https://127\.0\.0\.1:\d+, TLS on, 1 client tokens loaded",
                        log) is not None, "the start-up line gives the address, TLS and tokens")
        check(stack.token not in log, "the token appears in the adapter's log")
        check("client conformance" in log, "the log names the client that published")
    finally:
        if stack:
            stack.stop()
        if ARGS.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
