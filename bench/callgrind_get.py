#!/usr/bin/env python3
"""CPU per request, without the noise of a shared machine: instructions
counted by valgrind's callgrind for `GET /api/tenant/devices/:id` (or a
search by name), stdlib only.

    bench/callgrind_get.py [BINARY] [get|q] [N]     # default: target/release/devicehub get 2000

Seeds a fresh store through the API (1,000 devices, bench/seed.py; for `q`,
DEVICES=100000 is worth setting), restarts the binary under
`valgrind --tool=callgrind`, warms it up, zeroes the counters, sends N
requests over one keep-alive connection, and prints the instructions per
request. The profile is left in $OUT (default /tmp/callgrind-devicehub) for
`callgrind_annotate`.

What metrics cost: METRICS=off runs the server with `metrics.enabled=false`
(no `Track` middleware, no `GET /metrics`; the script checks which). With
METRICS=both it measures the same store, device and token twice, metrics on
then off (profiles in $OUT-on and $OUT-off), and prints the difference:

    METRICS=both bench/callgrind_get.py

Env: DEVICES=1000 PORT=18300 OUT=/tmp/callgrind-devicehub METRICS=on (on|off|both)
"""
import http.client, os, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed import mint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/devicehub")
MODE = sys.argv[2] if len(sys.argv) > 2 else "get"
N = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
DEVICES = int(os.environ.get("DEVICES", "1000"))
PORT = int(os.environ.get("PORT", "18300"))
OUT = os.environ.get("OUT", "/tmp/callgrind-devicehub")
SECRET = "callgrind-secret-" + os.urandom(16).hex()
METRICS = os.environ.get("METRICS", "on")
if METRICS not in ("on", "off", "both"):
    raise SystemExit(f"METRICS must be on, off or both, not {METRICS!r}")


def start(work, wrap, metrics="on"):
    env = dict(os.environ, DEVICEHUB__SERVER__BIND=f"127.0.0.1:{PORT}",
               DEVICEHUB__STORAGE__PATH=os.path.join(work, "devicehub.redb"),
               DEVICEHUB__AUTH__HS256_SECRET=SECRET, RUST_LOG="warn",
               DEVICEHUB__METRICS__ENABLED="true" if metrics == "on" else "false")
    server = subprocess.Popen(wrap + [BINARY, "serve"], env=env, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
    raise SystemExit("the server did not answer")


def stop(server):
    server.send_signal(signal.SIGTERM)
    server.wait()


def measure(work, metrics, path, token, out):
    """Instructions of N requests for `path` with metrics on or off."""
    server = start(work, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], metrics)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)

        def get(path):
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise SystemExit(f"GET {path}: {resp.status} {body[:200]!r}")

        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        if resp.status != (200 if metrics == "on" else 404):
            raise SystemExit(f"metrics {metrics}, yet GET /metrics answered {resp.status}")
        for _ in range(200 if MODE == "get" else 3):
            get(path)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
        for _ in range(N):
            get(path)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
    finally:
        stop(server)
    folder = os.path.dirname(out) or "."
    dumps = sorted(p for p in os.listdir(folder) if p.startswith(os.path.basename(out) + "."))
    last = os.path.join(folder, dumps[-1])
    text = subprocess.run(["callgrind_annotate", last], capture_output=True, text=True).stdout
    total = next(int(line.split()[0].replace(",", "")) for line in text.splitlines()
                 if "PROGRAM TOTALS" in line)
    print(f"{N} x GET {path}, metrics {metrics}: {total:,} instructions, "
          f"{total / N:,.0f} per request (profile: {last})", flush=True)
    return total / N


def main():
    work = tempfile.mkdtemp(prefix="devicehub-callgrind.")
    try:
        server = start(work, [])
        subprocess.run([sys.executable, os.path.join(ROOT, "bench/seed.py"), f"http://127.0.0.1:{PORT}",
                        SECRET, "1", str(DEVICES), os.path.join(work, "seed")], check=True,
                       stdout=subprocess.DEVNULL)
        stop(server)
        token = mint(SECRET, "bench-0000", "devices:read")
        with open(os.path.join(work, "seed/ids.txt")) as f:
            device = f.readline().strip()
        path = (f"/api/tenant/devices/{device}" if MODE == "get"
                else "/api/tenant/devices?limit=50&order=desc&q=Scanner+1")
        if METRICS != "both":
            measure(work, METRICS, path, token, OUT)
            return
        on = measure(work, "on", path, token, OUT + "-on")
        off = measure(work, "off", path, token, OUT + "-off")
        print(f"metrics cost: {on - off:,.0f} instructions per request, "
              f"{(on - off) / off * 100:.2f} % more than with metrics off "
              f"({(on - off) / on * 100:.2f} % of the request with metrics on)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
