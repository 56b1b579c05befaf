"""Benchmark: the call index behind the web pages on a large store.

    python bench/bench_callindex.py SOURCE.sqlite3 OUT.sqlite3 N

Copies the first recording report of SOURCE N times into a new store OUT (with a dialler context: 40 agents,
5 campaigns, one call a minute), then times the first index sync, a page with nothing new, a filtered and
sorted page, and trends by agent over 30 days.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from callqa.callindex import CallIndex, ListQuery
from callqa.store import Store
from callqa.trends import trends


def timed(f):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def main() -> None:
    source, out, n = Store(Path(sys.argv[1])), Store(Path(sys.argv[2])), int(sys.argv[3])
    with source.connect() as db:
        text = db.execute("SELECT report FROM reports WHERE source NOT LIKE '%pcap%' LIMIT 1").fetchone()[0]
    base = json.loads(text)
    now = time.time()
    rows = []
    for i in range(n):
        r = dict(base, id=f"{i:016x}", cache_key=f"k{i}", verdict=["good", "degraded", "failed"][i % 3],
                 context={"agent": f"agent{i % 40}", "campaign_id": f"C{i % 5}"})  # fmt: skip
        rows.append((r["id"], r["cache_key"], now - i * 60, "x", r["verdict"], r["duration_s"], json.dumps(r)))
    with out.connect() as db:
        db.executemany(
            "INSERT INTO reports (id, cache_key, created_at, source, verdict, duration_s, report) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )  # without the index columns: indexed by the first sync
    index = CallIndex(out)
    sync_s, _ = timed(index.sync)
    page_s, _ = timed(lambda: index.page(ListQuery()))
    filtered_s, page = timed(lambda: index.page(ListQuery(agent="agent7", sort="mos_1", descending=False)))
    trends_s, tr = timed(lambda: trends(out, "agent", now - 30 * 86400, now + 1))
    print(
        f"{n} reports of {len(text) / 1024:.0f} kB: first index sync {sync_s:.2f} s; page (nothing new) "
        f"{1000 * page_s:.0f} ms; filtered+sorted page {1000 * filtered_s:.0f} ms ({page.total} matches); "
        f"trends by agent over 30 days {1000 * trends_s:.0f} ms ({len(tr.groups)} groups)"
    )


if __name__ == "__main__":
    main()
