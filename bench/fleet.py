#!/usr/bin/env python3
"""The fleet-scale benchmark (stdlib only): one tenant of 100,000 devices.

    bench/fleet.py [BINARY]        # default: target/release/devicehub

Starts the binary on 127.0.0.1 with a fresh database, registers DEVICES
(default 100000) devices into one tenant through the API (1 % inactive, spread
over 100 locations), then prints:

- the server's RSS growth while 16 unlimited lists of the whole tenant run at
  once (target: at most 64 MiB);
- the p50 of `?status=inactive&limit=10` and of `?locationId=…&limit=10`
  against the p50 of a full list (target: at most 5 %);
- the p50 of `GET /api/tenant/stats` (target: at most 2 ms);
- with chromedriver and chromium installed, the dashboard over that tenant in
  headless Chromium, read from the page's Performance API marks: its first
  usable paint (target: at most 500 ms) and how long after the last keystroke
  search results show (target: at most 200 ms; the page waits 60 ms after a
  keystroke before it asks, so that fast typing sends one request).

Env: DEVICES=100000 PORT=18200 SEED_THREADS=16 LISTS=16 SAMPLES=300
"""
import http.client, json, os, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed import mint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = int(os.environ.get("DEVICES", "100000"))
PORT = int(os.environ.get("PORT", "18200"))
THREADS = int(os.environ.get("SEED_THREADS", "16"))
LISTS = int(os.environ.get("LISTS", "16"))
SAMPLES = int(os.environ.get("SAMPLES", "300"))
TENANT = "fleet"
SECRET = "fleet-bench-secret-" + os.urandom(16).hex()
# What the dashboard test types: three of them match too few devices to fill
# a page, so the server reads the whole tenant's names to answer.
SEARCHES = ["Scanner 04242", "Scanner 0999", "Fleet Scanner 07", "scanner 012345", "Scanner 1"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until_listening(port, path):
    for _ in range(200):
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", path)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def request(conn, path, token, method="GET", body=None):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body, headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status >= 300:
        raise SystemExit(f"{method} {path}: {resp.status} {data[:200]!r}")
    return data


def seed(admin):
    def worker(n):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        for i in range(n, DEVICES, THREADS):
            body = json.dumps({
                "name": f"Fleet Scanner {i:06d}",
                "status": "inactive" if i % 100 == 0 else "active",
                "locationIds": [f"loc-{i % 100:03d}"],
            })
            request(conn, "/api/tenant/devices", admin, "POST", body)

    started = time.time()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.time() - started


def p50_ms(path, token, samples):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        request(conn, path, token)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


class WebDriver:
    """Just enough W3C WebDriver to drive headless Chromium."""

    def __init__(self, port):
        self.port = port
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1440,900"]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
        return reply["value"]

    def do(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def script(self, source):
        return self.do("POST", "/execute/sync", {"script": source, "args": []})

    def wait_for(self, source, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.script(source)
            if value is not None:
                return value
            time.sleep(0.01)
        raise SystemExit(f"timed out waiting for {source}")


def dashboard_timings(admin):
    driver_port = PORT + 1
    driver = subprocess.Popen(["chromedriver", f"--port={driver_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_listening(driver_port, "/status")
        wd = WebDriver(driver_port)
        wd.do("POST", "/url", {"url": f"http://127.0.0.1:{PORT}/#token={admin}"})
        paint = wd.wait_for("const m = performance.getEntriesByName('devicehub:list-shown');"
                            "return m.length ? m[0].startTime : null;")
        search = wd.do("POST", "/element", {"using": "css selector", "value": "#search"})
        element = next(iter(search.values()))
        delays = []
        for query in SEARCHES:
            wd.do("POST", f"/element/{element}/clear", {})
            wd.script("performance.clearMarks();")
            wd.do("POST", f"/element/{element}/value", {"text": query})
            delays.append(wd.wait_for(
                "const typed = performance.getEntriesByName('devicehub:search-input');"
                "const shown = performance.getEntriesByName('devicehub:list-shown')"
                f".filter(m => m.detail && m.detail.q === {json.dumps(query)});"
                "return typed.length && shown.length ? shown[0].startTime - typed[typed.length - 1].startTime : null;"))
            print(f"  search {query!r}: results {delays[-1]:.0f} ms after the last keystroke")
        wd.call("DELETE", f"/session/{wd.session}")
        return paint, statistics.median(delays)
    finally:
        driver.terminate()
        driver.wait()


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/devicehub")
    work = tempfile.mkdtemp(prefix="devicehub-fleet.")
    env = dict(os.environ, DEVICEHUB__SERVER__BIND=f"127.0.0.1:{PORT}",
               DEVICEHUB__STORAGE__PATH=os.path.join(work, "devicehub.redb"),
               DEVICEHUB__AUTH__HS256_SECRET=SECRET, RUST_LOG="warn")
    server = subprocess.Popen([binary, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_until_listening(PORT, "/healthz")
        admin, reader = mint(SECRET, TENANT, "admin"), mint(SECRET, TENANT, "devices:read")
        took = seed(admin)
        print(f"seeded {DEVICES} devices into one tenant in {took:.1f} s ({DEVICES / took:.0f}/s)")

        idle = rss_kib(server.pid)
        peak, done = idle, threading.Event()

        def full_list():
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=300)
            data = request(conn, "/api/tenant/devices", reader)
            assert data.endswith(b'"hasMore":false}'), "a whole list"

        lists = [threading.Thread(target=full_list) for _ in range(LISTS)]
        started = time.time()
        for t in lists:
            t.start()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_kib(server.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        for t in lists:
            t.join()
        done.set()
        sampler.join()
        growth = (peak - idle) / 1024
        print(f"{LISTS} unlimited lists at once: {time.time() - started:.1f} s, RSS {idle / 1024:.1f} MiB idle, "
              f"{peak / 1024:.1f} MiB peak, growth {growth:.1f} MiB (target <= 64)")

        full = p50_ms("/api/tenant/devices", reader, 5)
        inactive = p50_ms("/api/tenant/devices?status=inactive&limit=10", reader, SAMPLES)
        located = p50_ms("/api/tenant/devices?locationId=loc-042&limit=10", reader, SAMPLES)
        stats = p50_ms("/api/tenant/stats", reader, SAMPLES)
        print(f"full list p50 {full:.1f} ms")
        print(f"?status=inactive&limit=10 p50 {inactive:.3f} ms = {100 * inactive / full:.2f} % of a full list (target <= 5 %)")
        print(f"?locationId=loc-042&limit=10 p50 {located:.3f} ms = {100 * located / full:.2f} % of a full list (target <= 5 %)")
        print(f"/api/tenant/stats p50 {stats:.3f} ms (target <= 2 ms)")
        if os.path.exists("/usr/bin/chromium") and subprocess.run(["which", "chromedriver"], capture_output=True).returncode == 0:
            paint, search = dashboard_timings(admin)
            print(f"dashboard first usable paint {paint:.0f} ms (target <= 500 ms)")
            print(f"dashboard search results {search:.0f} ms after the last keystroke, p50 of 5 (target <= 200 ms)")
        else:
            print("dashboard timings skipped: install chromium and chromium-driver")
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
