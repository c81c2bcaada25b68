#!/usr/bin/env python3
"""Prints the ratio table of a bench/run.sh TSV (mean of the runs)."""
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rps, p50 = defaultdict(list), defaultdict(list)
for r in rows:
    key = (r["label"], r["endpoint"], r["conns"])
    rps[key].append(float(r["rps"]))
    p50[key].append(float(r["p50_ms"]))
mean = lambda d, k: statistics.mean(d[k]) if k in d else None


def line(what, value, target):
    shown = "n/a" if value is None else f"{value:.2f}"
    print(f"| {what} | {shown} | {target} |")


ceiling = mean(rps, ("ceiling", "get", "64"))
ceiling_p50 = mean(p50, ("ceiling", "get", "1"))
pb_get = mean(rps, ("pb-tenant", "get", "64"))
pb_list = mean(rps, ("pb-tenant", "list", "64"))
pb_patch = mean(rps, ("pb-tenant", "patch", "64"))
get64 = mean(rps, ("product", "get", "64"))
print("| endpoint | c64 req/s | c1 req/s | c1 p50 ms |")
print("| --- | --- | --- | --- |")
for key in sorted({(k[0], k[1]) for k in rps}):
    a, b, c = mean(rps, key + ("64",)), mean(rps, key + ("1",)), mean(p50, key + ("1",))
    fmt = lambda v, f: "n/a" if v is None else f.format(v)
    print(f"| {key[0]} {key[1]} | {fmt(a, '{:.0f}')} | {fmt(b, '{:.0f}')} | {fmt(c, '{:.3f}')} |")
print()
print("| ratio | measured | target |")
print("| --- | --- | --- |")
div = lambda a, b: None if a is None or b is None else a / b
line("GET c64 / ceiling c64", div(get64, ceiling), ">= 0.50")
line("GET c64 / PocketBase tenant GET c64", div(get64, pb_get), ">= 15")
line("GET c1 p50 / ceiling c1 p50", div(mean(p50, ("product", "get", "1")), ceiling_p50), "<= 2")
line("list?limit=100 c64 / PocketBase list c64", div(mean(rps, ("product", "list", "64")), pb_list), ">= 10")
line("me c64 / ceiling c64", div(mean(rps, ("product", "me", "64")), ceiling), ">= 0.40")
line("PATCH c64 / PocketBase PATCH c64", div(mean(rps, ("product", "patch", "64")), pb_patch), ">= 4")
line("PATCH c64 / PATCH c1", div(mean(rps, ("product", "patch", "64")), mean(rps, ("product", "patch", "1"))), ">= 10")
