#!/usr/bin/env python3
"""Times `devicehub export` and `devicehub import` (stdlib only).

    bench/export.py [BINARY]        # default: target/release/devicehub

Writes an export of DEVICES (default 100000) devices over 10 tenants, each
with its `device.created` event (every 10th device with a previous key in its
grace period, every 20th revoked, every other one with a check-in), imports
it into a fresh store, then measures, each as its own process:

- `devicehub export` of that store (the time and the process's peak RSS);
- `devicehub import` of that export into another fresh store;
- `devicehub export --tenant` of one tenant;

and checks that exporting the second store gives the same lines as the first
export (after the header, which holds the time of export).
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SECRET = "bench-secret-0123456789abcdef-0123456789"


def ulid(ms, rnd):
    value = (ms << 80) | rnd
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def line(obj):
    return json.dumps(obj, separators=(",", ":")) + "\n"


def write_seed(path, total):
    base = int(time.time() * 1000) - 86_400_000
    with open(path, "w") as out:
        out.write(line({"kind": "devicehub-export", "version": 1, "exportedAt": rfc3339(base),
                        "tenant": None, "generator": "bench/export.py"}))
        devices = []
        for i in range(total):
            tenant = "tenant-%d" % (i % 10)
            ms = base + i
            device = {"id": "dev_" + ulid(ms, i), "name": "Device %d" % i,
                      "status": "revoked" if i % 20 == 0 else "active",
                      "locationIds": ["loc-%d" % (i % 50)], "pimEnabled": i % 3 == 0,
                      "pimSegmentIds": ["seg-%d" % (i % 7)] if i % 3 == 0 else [],
                      "createdAt": rfc3339(ms), "updatedAt": rfc3339(ms),
                      "lastSeenAt": rfc3339(ms + 500) if i % 2 else None}
            record = {"kind": "device", "tenant": tenant, **device, "version": 1,
                      "keyHash": hashlib.sha256(b"key-%d" % i).hexdigest()}
            if i % 10 == 5:
                record["previousKeyHash"] = hashlib.sha256(b"old-key-%d" % i).hexdigest()
                record["previousKeyGraceEndsAt"] = rfc3339(ms + 3_600_000)
            out.write(line(record))
            devices.append((tenant, ms, i, device))
        for tenant, ms, i, device in sorted(devices, key=lambda d: (d[0], d[1])):
            event_id = "evt_" + ulid(ms, i)
            event = {"id": event_id, "type": "device.created", "createdAt": rfc3339(ms),
                     "actor": "bench", "deviceId": device["id"],
                     "data": {"object": device, "previousAttributes": {}}}
            out.write(line({"kind": "event", "tenant": tenant, "id": event_id, "event": event}))
        out.write(line({"kind": "end", "records": 2 * total}))


def run(binary, db, args, stdin=None, stdout=None):
    """Runs one command; returns (seconds, peak RSS in MiB, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVICEHUB")}
    env.update({"DEVICEHUB__STORAGE__PATH": db, "DEVICEHUB__AUTH__HS256_SECRET": SECRET})
    started = time.monotonic()
    proc = subprocess.Popen([binary, *args], stdin=stdin, stdout=stdout,
                            stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit("%s %s failed: %s" % (binary, " ".join(args), err))
    return seconds, usage.ru_maxrss / 1024, err.strip()


def main():
    if sys.argv[1:2] == ["--seed"]:
        write_seed(sys.argv[2], int(sys.argv[3]))
        return
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/devicehub")
    total = int(os.environ.get("DEVICES", "100000"))
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        seed = os.path.join(tmp, "seed.ndjson")
        # In a process of its own: a child forked from a large parent would
        # start with the parent's peak RSS as its own.
        subprocess.run([sys.executable, __file__, "--seed", seed, str(total)], check=True)
        first = os.path.join(tmp, "a/devicehub.redb")
        second = os.path.join(tmp, "b/devicehub.redb")
        exported = os.path.join(tmp, "export.ndjson")
        with open(seed) as stdin, open(os.devnull, "w") as stdout:
            run(binary, first, ["import"], stdin=stdin, stdout=stdout)
        with open(exported, "w") as stdout:
            secs, rss, said = run(binary, first, ["export"], stdout=stdout)
        size = os.path.getsize(exported) / 2**20
        print("export:            %6.2f s, peak RSS %5.1f MiB (%s; %.0f MiB of NDJSON, %.0f MiB database)"
              % (secs, rss, said, size, os.path.getsize(first) / 2**20))
        with open(exported) as stdin, open(os.devnull, "w") as stdout:
            secs, rss, _ = run(binary, second, ["import"], stdin=stdin, stdout=stdout)
        print("import:            %6.2f s, peak RSS %5.1f MiB" % (secs, rss))
        with open(os.devnull, "w") as stdout:
            secs, rss, said = run(binary, second, ["export", "--tenant", "tenant-3"], stdout=stdout)
        print("export --tenant:   %6.2f s, peak RSS %5.1f MiB (%s)" % (secs, rss, said))
        again = os.path.join(tmp, "again.ndjson")
        with open(again, "w") as stdout:
            run(binary, second, ["export"], stdout=stdout)
        with open(exported) as a, open(again) as b:
            a.readline(), b.readline()
            same = all(x == y for x, y in zip(a, b)) and a.read() == b.read()
        print("re-export of the imported store: %s" % ("identical" if same else "DIFFERENT"))
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
