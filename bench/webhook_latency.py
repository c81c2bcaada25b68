#!/usr/bin/env python3
"""Webhook latency under a steady stream of changes (stdlib only).

    bench/webhook_latency.py [BINARY]      # default: target/release/devicehub

Starts the binary on 127.0.0.1 with a fresh database and
DEVICEHUB__WEBHOOKS__ALLOW_LOOPBACK=true, registers DEVICES devices through
the API, creates one webhook for `device.updated` pointing at a local
receiver (bench/webhook_receiver.py, a separate python3 process), then makes
RATE PATCHes a second for DURATION seconds over one keep-alive connection,
each a real change (a new name), on a fixed schedule (a late request is sent
at once; how late is reported).

The receiver notes when each delivery arrived; the event's `data.object.name`
ties it to the PATCH that made it. Latency is the arrival minus the moment
the PATCH's 200 was read (and, second, minus the moment the request was
started). Prints p50, p90, p99 and max of both, how many changes had no
delivery, repeats and bad signatures, and the medians of the webhook's
deliveries log (`durationMs`, the attempt as devicehub timed it).

Env: RATE=100 DURATION=30 DEVICES=100 PORT=18120 (the receiver: PORT+1)
"""
import http.client, json, os, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed import mint  # noqa: E402
from fleet import wait_until_listening  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = int(os.environ.get("RATE", "100"))
DURATION = int(os.environ.get("DURATION", "30"))
DEVICES = int(os.environ.get("DEVICES", "100"))
PORT = int(os.environ.get("PORT", "18120"))
RECEIVER_PORT = PORT + 1
TENANT = "hooks"
SECRET = "webhook-bench-secret-" + os.urandom(16).hex()


def call(conn, method, path, token, body=None, want=200):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != want:
        raise SystemExit(f"{method} {path}: {resp.status} {data[:300]!r}")
    return json.loads(data) if data else None


def pct(values, p):
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(values) * p // 100))
    return values[int(rank) - 1]


def summary(name, values):
    v = sorted(values)
    return (f"{name}: p50 {pct(v, 50):.2f} ms, p90 {pct(v, 90):.2f} ms, p99 {pct(v, 99):.2f} ms, "
            f"max {v[-1]:.2f} ms, min {v[0]:.2f} ms (n={len(v)})")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/devicehub")
    work = tempfile.mkdtemp(prefix="devicehub-webhook-bench.")
    env = dict(os.environ, DEVICEHUB__SERVER__BIND=f"127.0.0.1:{PORT}",
               DEVICEHUB__STORAGE__PATH=os.path.join(work, "devicehub.redb"),
               DEVICEHUB__AUTH__HS256_SECRET=SECRET, DEVICEHUB__WEBHOOKS__ALLOW_LOOPBACK="true",
               RUST_LOG="warn")
    server_log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([binary, "serve"], env=env, stdout=server_log, stderr=subprocess.STDOUT)
    receiver = None
    try:
        wait_until_listening(PORT, "/healthz")
        admin = mint(SECRET, TENANT, "admin devices:read")
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        ids = [call(conn, "POST", "/api/tenant/devices", admin, {"name": f"Hook Scanner {i}"}, 201)["data"]["id"]
               for i in range(DEVICES)]
        hook = call(conn, "POST", "/api/tenant/webhooks", admin,
                    {"url": f"http://127.0.0.1:{RECEIVER_PORT}/hook", "events": ["device.updated"]}, 201)
        hook_id, whsec = hook["data"]["id"], hook["secret"]
        out_path = os.path.join(work, "arrivals.txt")
        out = open(out_path, "w")
        receiver = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench/webhook_receiver.py"),
                                     str(RECEIVER_PORT)], env=dict(os.environ, WHSEC=whsec), stdout=out)
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", RECEIVER_PORT, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.02)

        total = RATE * DURATION
        started, answered, late = {}, {}, []
        t0 = time.monotonic_ns() + 100_000_000
        step = 1_000_000_000 // RATE
        for i in range(total):
            due = t0 + i * step
            now = time.monotonic_ns()
            if now < due:
                time.sleep((due - now) / 1e9)
            name = f"hook {i}"
            begin = time.monotonic_ns()
            late.append((begin - due) / 1e6)
            call(conn, "PATCH", f"/api/tenant/devices/{ids[i % len(ids)]}", admin, {"name": name})
            answered[name] = time.monotonic_ns()
            started[name] = begin
        drove = (time.monotonic_ns() - t0) / 1e9

        # Wait for the deliveries still under way.
        deadline = time.time() + 30
        arrivals = {}
        while time.time() < deadline:
            arrivals.clear()
            repeats = bad = 0
            with open(out_path) as f:
                for line in f:
                    at, event_id, ok, body = line.rstrip("\n").split(" ", 3)
                    name = json.loads(body)["data"]["object"]["name"]
                    bad += ok != "1"
                    if name in arrivals:
                        repeats += 1
                    else:
                        arrivals[name] = int(at)
            if all(n in arrivals for n in answered):
                break
            time.sleep(0.2)

        missing = [n for n in answered if n not in arrivals]
        after_200 = [(arrivals[n] - answered[n]) / 1e6 for n in answered if n in arrivals]
        after_start = [(arrivals[n] - started[n]) / 1e6 for n in answered if n in arrivals]
        patch_ms = [(answered[n] - started[n]) / 1e6 for n in answered]
        log = call(conn, "GET", f"/api/tenant/webhooks/{hook_id}/deliveries", admin)["data"]
        print(f"{total} PATCHes in {drove:.1f} s ({total / drove:.1f}/s), each a change; "
              f"sent late by more than 5 ms: {sum(x > 5 for x in late)}, max {max(late):.2f} ms")
        print(summary("PATCH round trip (start to 200 read)", patch_ms))
        print(summary("webhook arrival - PATCH 200 read", after_200))
        print(summary("webhook arrival - PATCH request start", after_start))
        print(f"changes without a delivery: {len(missing)}; repeated deliveries: {repeats}; bad signatures: {bad}")
        print(f"deliveries log (last {len(log)} attempts): durationMs median "
              f"{statistics.median(d['durationMs'] for d in log)}, max {max(d['durationMs'] for d in log)}; "
              f"all delivered: {all(d['status'] == 200 for d in log)}")
    finally:
        if receiver is not None:
            receiver.terminate()
            receiver.wait()
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
