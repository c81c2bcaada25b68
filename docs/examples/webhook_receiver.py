#!/usr/bin/env python3
"""A devicehub webhook receiver: standard library only.

    WHSEC=whsec_... python3 webhook_receiver.py 8000

Checks Devicehub-Signature over the exact body, refuses a signature older
than five minutes, and remembers event ids (a delivery may come twice).
"""
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["WHSEC"].encode()
TOLERANCE_SECONDS = 300
seen = set()


def verify(header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(SECRET, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verify(self.headers.get("Devicehub-Signature", ""), body):
            self.send_response(400)
            self.end_headers()
            return
        event = json.loads(body)
        if event["id"] not in seen:  # at least once: skip a repeat
            seen.add(event["id"])
            print(event["type"], event["deviceId"], event["data"]["previousAttributes"], flush=True)
        self.send_response(204)  # any 2xx within 10 s: delivered
        self.end_headers()


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
