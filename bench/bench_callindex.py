"""Benchmark: the call index behind the web pages, the rollups and fault detection on a large store.

    python bench/bench_callindex.py SOURCE OUT.sqlite3 N

SOURCE is a store (its first recording report is used) or a report's JSON (``callqa analyze --json``). Copies
that report N times into a new store OUT (with a dialler context: 40 agents, 5 campaigns, 4 carriers, one call
a minute), then times the first index sync, a page with nothing new, a filtered and sorted page, trends by
agent over 30 days, the first rollup refresh, rollup trends by carrier over 30 days in days and an evaluation
of fault detection; wall time and this process's CPU time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from callqa import incidents, rollups
from callqa.callindex import CallIndex, ListQuery
from callqa.config import AlertSettings
from callqa.store import Store
from callqa.trends import group_trends, trends


def timed(f):  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    out = f()
    timed.cpu = time.process_time() - c0  # type: ignore[attr-defined]
    return time.perf_counter() - t0, out


def main() -> None:
    out, n = Store(Path(sys.argv[2])), int(sys.argv[3])
    if sys.argv[1].endswith(".json"):
        text = Path(sys.argv[1]).read_text()
    else:
        with Store(Path(sys.argv[1])).connect() as db:
            text = db.execute("SELECT report FROM reports WHERE source NOT LIKE '%pcap%' LIMIT 1").fetchone()[0]
    base = json.loads(text)
    now = time.time()
    rows = []
    for i in range(n):
        context = {"agent": f"agent{i % 40}", "campaign_id": f"C{i % 5}", "carrier": f"trunk{i % 4}"}
        r = dict(
            base, id=f"{i:016x}", cache_key=f"k{i}", verdict=["good", "degraded", "failed"][i % 3], context=context
        )
        rows.append((r["id"], r["cache_key"], now - i * 60, "x", r["verdict"], r["duration_s"], json.dumps(r)))
    with out.connect() as db:
        db.executemany(
            "INSERT INTO reports (id, cache_key, created_at, source, verdict, duration_s, report) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )  # without the index columns: indexed by the first sync
    index = CallIndex(out)
    sync_s, _ = timed(index.sync)
    sync_cpu = timed.cpu  # type: ignore[attr-defined]
    page_s, _ = timed(lambda: index.page(ListQuery()))
    filtered_s, page = timed(lambda: index.page(ListQuery(agent="agent7", sort="mos_1", descending=False)))
    trends_s, tr = timed(lambda: trends(out, "agent", now - 30 * 86400, now + 1))
    refresh_s, quarters = timed(lambda: rollups.refresh(out))
    refresh_cpu = timed.cpu  # type: ignore[attr-defined]
    carriers_s, by_carrier = timed(lambda: group_trends(out, "carrier", now - 30 * 86400, now + 1, "1d"))
    evaluate_s, ev = timed(lambda: incidents.evaluate(out, AlertSettings(), now))
    print(
        f"{n} reports of {len(text) / 1024:.0f} kB: first index sync {sync_s:.2f} s (CPU {sync_cpu:.2f} s); page "
        f"(nothing new) {1000 * page_s:.0f} ms; filtered+sorted page {1000 * filtered_s:.0f} ms ({page.total} "
        f"matches); trends by agent over 30 days {1000 * trends_s:.0f} ms ({len(tr.groups)} groups); first rollup "
        f"refresh {refresh_s:.2f} s (CPU {refresh_cpu:.2f} s, {quarters} quarter hours); rollup trends by carrier "
        f"over 30 days {1000 * carriers_s:.0f} ms ({by_carrier.overall.calls} calls); fault detection "
        f"{1000 * evaluate_s:.0f} ms ({len(ev.checks)} checks)"
    )


if __name__ == "__main__":
    main()
