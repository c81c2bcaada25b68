#!/usr/bin/env python3
"""A webhook receiver for bench/webhook_latency.py (stdlib only).

    WHSEC=whsec_... webhook_receiver.py PORT

Listens on 127.0.0.1:PORT. For each POST it reads the whole body, takes the
arrival time (time.monotonic_ns(): CLOCK_MONOTONIC, the same clock in every
process of the machine, so the driver's times compare with it), checks the
Devicehub-Signature as docs/WEBHOOKS.md says, answers 200, and prints one
line to stdout:

    <arrival ns> <Devicehub-Event-Id> <signature ok: 1|0> <event JSON>
"""
import hashlib, hmac, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WHSEC"].encode()
LOCK = threading.Lock()


def verify(header, body):
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > 300:
        return False
    expected = hmac.new(SECRET, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        arrived = time.monotonic_ns()
        ok = verify(self.headers.get("Devicehub-Signature", ""), body)
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()
        line = f"{arrived} {self.headers.get('Devicehub-Event-Id', '-')} {int(ok)} {body.decode()}\n"
        with LOCK:
            sys.stdout.write(line)
            sys.stdout.flush()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
