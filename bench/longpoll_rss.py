#!/usr/bin/env python3
"""What idle long polls of the change feed cost in memory (stdlib only).

    bench/longpoll_rss.py [BINARY]      # default: target/release/devicehub

Starts the binary on 127.0.0.1 with a fresh database, registers DEVICES
devices through the API (one event each), and reads the id of the latest
event. Then, ROUNDS times:

1. reads the server's VmRSS from /proc (before);
2. opens POLLS connections (asyncio, one socket each), each sending
   GET /api/tenant/events?waitSeconds=60&startingAfter=<latest id>;
3. waits until they are parked: every request sent, none answered, the
   server's open sockets up by POLLS, and its CPU time (utime + stime in
   /proc/PID/stat) unchanged for a second; reads VmRSS (parked), and again
   after SETTLE seconds;
4. makes one change (a PATCH, one commit): every poll must wake and answer
   with exactly that event; prints how long until the last one had, and
   VmRSS with the answered connections still open (woken), then after the
   client closed them (closed).

The client raises its own open-file limit (RLIMIT_NOFILE) to what POLLS
needs, up to the hard limit; the server, started by it, inherits that.

The growth is also broken down by kind of mapping (thread stacks, main
heap, other anonymous memory: mostly malloc arenas; and the thread count).

Then (unless CONTROL=0), on a second fresh server, a control: POLLS
connections that each read the feed once without waitSeconds and stay open,
idle, so the cost of an idle connection and of the parked request can be
told apart.

And (unless CONTROL=0), on a third fresh server, POLLS connections that
send nothing at all: what actix-web holds per connection before any
request (its read and write buffers and the connection's task). Measured
1 s after the last one is accepted, within the 5 s actix-web gives a
connection to send its first request.

Env: POLLS=1000 ROUNDS=2 DEVICES=100 SETTLE=5 PORT=18130 CONTROL=1
"""
import asyncio, http.client, json, os, resource, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed import mint  # noqa: E402
from fleet import wait_until_listening  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLLS = int(os.environ.get("POLLS", "1000"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
DEVICES = int(os.environ.get("DEVICES", "100"))
SETTLE = float(os.environ.get("SETTLE", "5"))
PORT = int(os.environ.get("PORT", "18130"))
CONTROL = os.environ.get("CONTROL", "1") != "0"
TENANT = "polls"
SECRET = "longpoll-bench-secret-" + os.urandom(16).hex()


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} for {pid}")


def breakdown(pid):
    """Resident KiB by kind of mapping (/proc/PID/smaps), and the thread count:
    anonymous mappings of about 2 MiB are thread stacks, [heap] is the main
    heap, other anonymous mappings are mostly malloc's per-thread arenas."""
    out = {"stacks": 0, "heap": 0, "other anon": 0, "files": 0}
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                name = head[5] if len(head) > 5 else ""
                size = (hi - lo) // 1024
                if name == "[heap]":
                    kind = "heap"
                elif name.startswith("/"):
                    kind = "files"
                elif not name and 2040 <= size <= 2060:
                    kind = "stacks"
                else:
                    kind = "other anon"
            elif head[0] == "Rss:":
                out[kind] += int(head[1])
    out["threads"] = status_kib(pid, "Threads")
    return out


def grew(a, b):
    return ", ".join(f"{k} {b[k] - a[k]:+d}" if k == "threads" else f"{k} {mib(b[k] - a[k])}" for k in a)


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def sockets(pid):
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def call(conn, method, path, token, body=None, want=200):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != want:
        raise SystemExit(f"{method} {path}: {resp.status} {data[:300]!r}")
    return json.loads(data)


def latest_event(conn, token):
    after = None
    while True:
        page = call(conn, "GET", "/api/tenant/events?limit=1000" + (f"&startingAfter={after}" if after else ""), token)
        if page["data"]:
            after = page["data"][-1]["id"]
        if not page["hasMore"]:
            return after


async def read_answer(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = await reader.readexactly(length)
    return status, json.loads(body), time.monotonic()


async def round_(pid, token, read_token, device_id, after, number):
    before = status_kib(pid, "VmRSS")
    kinds_before = breakdown(pid)
    sockets_before = sockets(pid)
    request = (f"GET /api/tenant/events?waitSeconds=60&startingAfter={after} HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{PORT}\r\nAuthorization: Bearer {read_token}\r\n\r\n").encode()
    conns = []
    for start in range(0, POLLS, 100):
        batch = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", PORT)
                                       for _ in range(start, min(POLLS, start + 100))))
        for reader, writer in batch:
            writer.write(request)
        await asyncio.gather(*(w.drain() for _, w in batch))
        conns.extend(batch)
    answers = [asyncio.ensure_future(read_answer(r)) for r, _ in conns]
    # Parked: nothing answered, the sockets are there, the server idle.
    waited = time.monotonic()
    last_ticks, still_since = cpu_ticks(pid), time.monotonic()
    while True:
        await asyncio.sleep(0.1)
        if any(a.done() for a in answers):
            done = next(a for a in answers if a.done())
            raise SystemExit(f"a long poll answered before any change: {done.result() if not done.exception() else done.exception()}")
        ticks = cpu_ticks(pid)
        if ticks != last_ticks:
            last_ticks, still_since = ticks, time.monotonic()
        if sockets(pid) - sockets_before >= POLLS and time.monotonic() - still_since >= 1.0:
            break
        if time.monotonic() - waited > 30:
            raise SystemExit(f"not parked after 30 s: {sockets(pid) - sockets_before} sockets opened")
    parked = status_kib(pid, "VmRSS")
    kinds_parked = breakdown(pid)
    parked_sockets = sockets(pid) - sockets_before
    await asyncio.sleep(SETTLE)
    settled = status_kib(pid, "VmRSS")
    # One change wakes them all.
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    changed = time.monotonic()
    call(conn, "PATCH", f"/api/tenant/devices/{device_id}", token, {"name": f"poll round {number}"})
    results = await asyncio.gather(*answers)
    last = max(at for _, _, at in results) - changed
    ids = {tuple(e["id"] for e in body["data"]) for _, body, _ in results}
    statuses = {status for status, _, _ in results}
    if statuses != {200} or len(ids) != 1 or len(next(iter(ids))) != 1:
        raise SystemExit(f"the woken polls answered {statuses} with {ids}")
    woken = status_kib(pid, "VmRSS")
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    await asyncio.sleep(1)
    closed = status_kib(pid, "VmRSS")
    print(f"round {number}: {POLLS} long polls parked ({parked_sockets} server sockets more); VmRSS "
          f"before {mib(before)}, parked {mib(parked)} (+{mib(parked - before)}), "
          f"after {SETTLE:g} s more {mib(settled)} (+{mib(settled - before)}), "
          f"woken by one PATCH {mib(woken)}, closed {mib(closed)}; "
          f"all {POLLS} answered the one new event {last * 1000:.0f} ms after the PATCH was sent")
    print(f"round {number}: growth while parked by kind: {grew(kinds_before, kinds_parked)}")
    return next(iter(ids))[0]


async def control(pid, read_token, after):
    """POLLS connections that each read the feed once without waiting (the
    same handler, answered at once with []) and stay open, idle: what an
    idle keep-alive connection costs, for comparison. Measured 1 s after the
    last answer, within actix-web's 5 s keep-alive."""
    before = status_kib(pid, "VmRSS")
    kinds_before = breakdown(pid)
    request = (f"GET /api/tenant/events?startingAfter={after} HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{PORT}\r\nAuthorization: Bearer {read_token}\r\n\r\n").encode()
    conns = []
    for start in range(0, POLLS, 100):
        batch = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", PORT)
                                       for _ in range(start, min(POLLS, start + 100))))
        for reader, writer in batch:
            writer.write(request)
        await asyncio.gather(*(w.drain() for _, w in batch))
        conns.extend(batch)
    results = await asyncio.gather(*(read_answer(r) for r, _ in conns))
    if {status for status, _, _ in results} != {200} or any(body["data"] for _, body, _ in results):
        raise SystemExit("the control requests did not all answer 200 with no events")
    await asyncio.sleep(1)
    idle = status_kib(pid, "VmRSS")
    kinds_idle = breakdown(pid)
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    print(f"control: {POLLS} keep-alive connections idle after one answered feed read; VmRSS "
          f"before {mib(before)}, idle {mib(idle)} (+{mib(idle - before)}); by kind: {grew(kinds_before, kinds_idle)}")


async def bare(pid):
    """POLLS connections that send nothing, idle."""
    before = status_kib(pid, "VmRSS")
    kinds_before = breakdown(pid)
    sockets_before = sockets(pid)
    conns = []
    for start in range(0, POLLS, 100):
        conns.extend(await asyncio.gather(*(asyncio.open_connection("127.0.0.1", PORT)
                                            for _ in range(start, min(POLLS, start + 100)))))
    waited = time.monotonic()
    while sockets(pid) - sockets_before < POLLS:
        if time.monotonic() - waited > 30:
            raise SystemExit(f"only {sockets(pid) - sockets_before} connections accepted after 30 s")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    idle = status_kib(pid, "VmRSS")
    kinds_idle = breakdown(pid)
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    print(f"bare: {POLLS} connections open, no request sent; VmRSS before {mib(before)}, "
          f"idle {mib(idle)} (+{mib(idle - before)}); by kind: {grew(kinds_before, kinds_idle)}")


def serve(binary):
    """A server on a fresh database with DEVICES devices: (process, work dir,
    admin token, read token, device ids, latest event id)."""
    work = tempfile.mkdtemp(prefix="devicehub-longpoll-bench.")
    env = dict(os.environ, DEVICEHUB__SERVER__BIND=f"127.0.0.1:{PORT}",
               DEVICEHUB__STORAGE__PATH=os.path.join(work, "devicehub.redb"),
               DEVICEHUB__AUTH__HS256_SECRET=SECRET, RUST_LOG="warn")
    server_log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([binary, "serve"], env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(PORT, "/healthz")
        admin = mint(SECRET, TENANT, "admin")
        read = mint(SECRET, TENANT, "devices:read")
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        ids = [call(conn, "POST", "/api/tenant/devices", admin, {"name": f"Poll Scanner {i}"}, 201)["data"]["id"]
               for i in range(DEVICES)]
        after = latest_event(conn, read)
        conn.close()
        time.sleep(1)
    except BaseException:
        stop(server, work)
        raise
    print(f"server pid {server.pid}: VmRSS {mib(status_kib(server.pid, 'VmRSS'))} after registering "
          f"{DEVICES} devices; open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    return server, work, admin, read, ids, after


def stop(server, work):
    server.terminate()
    server.wait()
    subprocess.run(["rm", "-rf", work])


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/devicehub")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = POLLS + 256
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit(f"{POLLS} polls need {want} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    server, work, admin, read, ids, after = serve(binary)
    try:
        for number in range(1, ROUNDS + 1):
            after = asyncio.run(round_(server.pid, admin, read, ids[0], after, number))
        print(f"peak VmHWM {mib(status_kib(server.pid, 'VmHWM'))}")
    finally:
        stop(server, work)
    if CONTROL:
        server, work, admin, read, ids, after = serve(binary)
        try:
            asyncio.run(control(server.pid, read, after))
        finally:
            stop(server, work)
        server, work, admin, read, ids, after = serve(binary)
        try:
            asyncio.run(bare(server.pid))
        finally:
            stop(server, work)


if __name__ == "__main__":
    main()
