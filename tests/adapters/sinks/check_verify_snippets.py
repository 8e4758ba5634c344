#!/usr/bin/env python3
"""Runs the signature verification code that docs/ADAPTERS.md gives the receiving
agencies against a request the webhook sink really sent.

webhook_signing_test.cpp captures a request and writes DIR/request.json:
  {"headers": {lower-case name: value}, "body_file": "body", "secret_files": [...]}
with the body's raw bytes in DIR/body. This script takes the ```python block of the
document that defines verify_kolabus_webhook, as a reader would copy it, and checks it
accepts that request and refuses altered ones (another body, another secret, a missing
header, a stale or future timestamp). With --php it runs the ```php block the same way
through `php` (not installed by scripts/setup: a check by hand, not part of CI).

Standard library only. Exit status 0 when every case gives the expected answer.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets as random_secrets
import subprocess
import sys
import tempfile
import time


def snippet(doc, lang, marker):
    blocks = re.findall(r"```" + lang + r"\n(.*?)```", open(doc, encoding="utf-8").read(), re.S)
    found = [b for b in blocks if marker in b]
    if len(found) != 1:
        raise SystemExit(f"{doc}: expected one ```{lang} block with {marker!r}, found {len(found)}")
    return found[0]


def sign(secret, msg_id, timestamp, body):
    """The test's own signer (not the document's code): for re-signed variants."""
    key = base64.b64decode(secret.strip()[len("whsec_"):])
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def cases(request_dir):
    req = json.load(open(os.path.join(request_dir, "request.json")))
    headers = req["headers"]
    body = open(os.path.join(request_dir, req["body_file"]), "rb").read()
    secrets = [open(f).read() for f in req["secret_files"]]
    other = "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()
    now = int(time.time())

    def with_headers(**changes):
        h = dict(headers)
        for k, v in changes.items():
            k = k.replace("_", "-")
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
        return h

    def resigned(ts):
        return with_headers(webhook_timestamp=str(ts),
                            webhook_signature=sign(secrets[0], headers["webhook-id"], ts, body))

    out = [("the request as the sink sent it", secrets, headers, body, True)]
    if len(secrets) > 1:
        for i, s in enumerate(secrets):
            out.append((f"the rotation's secret {i + 1} alone", [s], headers, body, True))
    out += [
        ("another secret", [other], headers, body, False),
        ("another secret first, then the right one", [other] + secrets, headers, body, True),
        ("a changed body", secrets, headers, body.replace(b"}", b" }", 1), False),
        ("a body with a byte more", secrets, headers, body + b"\n", False),
        ("another webhook-id", secrets, with_headers(webhook_id=headers["webhook-id"] + "0"),
         body, False),
        ("no webhook-signature", secrets, with_headers(webhook_signature=None), body, False),
        ("no webhook-id", secrets, with_headers(webhook_id=None), body, False),
        ("no webhook-timestamp", secrets, with_headers(webhook_timestamp=None), body, False),
        ("a webhook-timestamp that is not a number", secrets,
         with_headers(webhook_timestamp="soon"), body, False),
        ("other versions and a bad v1 before the good one", secrets,
         with_headers(webhook_signature="v1a,AAAA v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "
                      + headers["webhook-signature"]), body, True),
        ("re-signed now", secrets, resigned(now), body, True),
        ("re-signed 10 minutes ago", secrets, resigned(now - 600), body, False),
        ("re-signed 10 minutes ahead", secrets, resigned(now + 600), body, False),
    ]
    return out


def run_python(doc, all_cases):
    namespace = {}
    exec(compile(snippet(doc, "python", "def verify_kolabus_webhook"), doc, "exec"), namespace)
    verify = namespace["verify_kolabus_webhook"]
    return [bool(verify(s, h, b)) for _, s, h, b, _ in all_cases]


def run_php(doc, all_cases):
    code = snippet(doc, "php", "function verify_kolabus_webhook")
    driver = code + r"""
$cases = json_decode(file_get_contents($argv[1]), true);
foreach ($cases as $c) {
    echo verify_kolabus_webhook($c['secrets'], $c['headers'], base64_decode($c['body'])) ? "1\n" : "0\n";
}
"""
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "verify.php")
        data = os.path.join(d, "cases.json")
        open(script, "w").write(driver)
        json.dump([{"secrets": s, "headers": h, "body": base64.b64encode(b).decode()}
                   for _, s, h, b, _ in all_cases], open(data, "w"))
        r = subprocess.run(["php", script, data], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"php failed: {r.stdout}{r.stderr}")
        return [line == "1" for line in r.stdout.split()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--doc", required=True, help="docs/ADAPTERS.md")
    p.add_argument("--request", required=True, help="the directory with request.json and the body")
    p.add_argument("--php", action="store_true", help="check the PHP snippet instead (needs php)")
    args = p.parse_args()
    all_cases = cases(args.request)
    lang = "php" if args.php else "python"
    got = (run_php if args.php else run_python)(args.doc, all_cases)
    failed = 0
    for (what, _, _, _, want), answer in zip(all_cases, got, strict=True):
        ok = answer == want
        failed += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {lang}: {what}: {'accepted' if answer else 'refused'}")
    print(f"{lang}: {len(all_cases) - failed} of {len(all_cases)} cases answered as expected")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
