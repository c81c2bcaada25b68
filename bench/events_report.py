#!/usr/bin/env python3
"""Prints the before/after table of a bench/events.sh TSV.

    events_report.py RESULTS.tsv

For each endpoint and connection count: req/s before and after events (mean
and median of the runs), after/before of the means, and after/before of each
interleaved pair (run n before against run n after), so that one noisy run
shows as one odd pair rather than hiding in a mean. Also the p50 and p99
latency (means of the runs).
"""
import csv, statistics, sys
from collections import defaultdict

rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if r["flag"] == "ok"]
runs = defaultdict(dict)
for r in rows:
    runs[(r["endpoint"], int(r["conns"]), r["label"])][int(r["run"])] = r


def col(key, name):
    return [float(r[name]) for _, r in sorted(runs[key].items())]


print("| endpoint | conns | before req/s mean (median) | after req/s mean (median) | after/before | per pair | p50 ms before → after | p99 ms before → after |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for ep, conns in sorted({(k[0], k[1]) for k in runs}, key=lambda k: (k[0] != "patch", k[0], -k[1])):
    b, a = (ep, conns, "before"), (ep, conns, "after")
    if not runs[b] or not runs[a]:
        continue
    rb, ra = col(b, "rps"), col(a, "rps")
    pair_ratios = [float(runs[a][n]["rps"]) / float(runs[b][n]["rps"]) for n in sorted(runs[a]) if n in runs[b]]
    shown = " ".join(f"{x:.2f}" for x in pair_ratios) if pair_ratios else "n/a"
    print(f"| {ep.upper()} | {conns} "
          f"| {statistics.mean(rb):,.0f} ({statistics.median(rb):,.0f}) "
          f"| {statistics.mean(ra):,.0f} ({statistics.median(ra):,.0f}) "
          f"| {statistics.mean(ra) / statistics.mean(rb):.3f} "
          f"| {shown} "
          f"| {statistics.mean(col(b, 'p50_ms')):.3f} → {statistics.mean(col(a, 'p50_ms')):.3f} "
          f"| {statistics.mean(col(b, 'p99_ms')):.3f} → {statistics.mean(col(a, 'p99_ms')):.3f} |")
