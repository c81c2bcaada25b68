#!/usr/bin/env python3
"""Seeds devicehub through its API for the benchmarks (stdlib only).

    seed.py BASE_URL SECRET TENANTS DEVICES_PER_TENANT OUT_DIR

Mints HS256 admin tokens for tenants bench-0000.. with SECRET, registers the
devices with a few concurrent keep-alive connections, and writes to OUT_DIR:
ids.txt (the first tenant's device ids), key.txt (one device key of it),
admin.txt and read.txt (tokens for the first tenant).
"""
import base64, hashlib, hmac, http.client, json, os, sys, threading, time
from urllib.parse import urlparse


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret, tenant, scope, ttl=6 * 3600):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    payload = b64(json.dumps({"tenant_id": tenant, "scope": scope, "iat": now, "exp": now + ttl, "sub": "bench"}).encode())
    signing = f"{header}.{payload}".encode()
    sig = b64(hmac.new(secret.encode(), signing, hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


def main():
    base, secret, tenants, per_tenant, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    url = urlparse(base)
    work = [(f"bench-{t:04d}", i) for t in range(tenants) for i in range(per_tenant)]
    tokens = {f"bench-{t:04d}": mint(secret, f"bench-{t:04d}", "admin") for t in range(tenants)}
    first = f"bench-{0:04d}"
    ids, keys, lock = {}, {}, threading.Lock()
    threads = int(os.environ.get("SEED_THREADS", "16"))
    started = time.time()

    def worker(n):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        for tenant, i in work[n::threads]:
            body = json.dumps({
                "name": f"Bench Scanner {i}",
                "locationIds": [f"loc-{i % 10:03d}", f"loc-{(i // 10) % 10:03d}"],
                "pimEnabled": i % 3 == 0,
                "pimSegmentIds": [f"seg-{i % 5}"],
            })
            conn.request("POST", "/api/tenant/devices", body, {
                "Authorization": f"Bearer {tokens[tenant]}", "Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 201:
                raise SystemExit(f"seeding failed: {resp.status} {data[:200]!r}")
            if tenant == first:
                doc = json.loads(data)
                with lock:
                    ids[i] = doc["data"]["id"]
                    keys[i] = doc["apiKey"]

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    took = time.time() - started
    os.makedirs(out, exist_ok=True)
    order = sorted(ids, key=lambda i: ids[i])
    with open(os.path.join(out, "ids.txt"), "w") as f:
        f.write("\n".join(ids[i] for i in order) + "\n")
    with open(os.path.join(out, "key.txt"), "w") as f:
        f.write(keys[order[0]])
    with open(os.path.join(out, "admin.txt"), "w") as f:
        f.write(tokens[first])
    with open(os.path.join(out, "read.txt"), "w") as f:
        f.write(mint(secret, first, "devices:read"))
    print(f"seeded {len(work)} devices over {tenants} tenants in {took:.1f} s ({len(work) / took:.0f}/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
