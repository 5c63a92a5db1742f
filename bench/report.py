"""Turn a run's figures into the table: figure, measured, floor, ratio, target, met?"""

from __future__ import annotations

# A worker whose peak RSS with a large backlog stays within this factor of its peak at steady load is "flat".
FLAT_RSS_RATIO = 1.25


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{text} {unit}".strip()


def _pair(fig: dict, a: str, b: str) -> str:
    return f"{_num(fig.get(a))} / {_num(fig.get(b))} {fig.get('unit', '')}".strip()


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def table_rows(results: dict) -> list[dict]:
    """Return the table's rows (strings), in the issue's order, from ``results['figures']``."""
    f = results.get("figures", {})
    rows: list[dict] = []

    def add(figure: str, measured: str, floor: str = "", ratio: float | None = None, target: str = "",
            met: bool | None = None, note: str = "") -> None:
        rows.append({"figure": figure, "measured": measured, "floor": floor,
                     "ratio": "" if ratio is None else f"{ratio:.0%}", "target": target,
                     "met": _met(met) if target else "", "note": note})

    def unavailable(key: str, figure: str, target: str = "") -> bool:
        fig = f.get(key)
        if fig is None:
            add(figure, "not measured", target=target, note="phase did not run")
            return True
        if "unavailable" in fig:
            add(figure, "not available", target=target, note=fig["unavailable"])
            return True
        return False

    copy_floor = f.get("copy_floor", {}).get("value")
    bare_floor = f.get("bare_floor", {}).get("value")
    if not unavailable("copy_floor", "Floor: raw staged COPY into history"):
        add("Floor: raw staged COPY into history", _num(copy_floor, "rows/s"), note=f["copy_floor"].get("note", ""))
    if not unavailable("bare_floor", "Floor: bare Flask 202 endpoint"):
        add("Floor: bare Flask 202 endpoint", _num(bare_floor, "req/s"), note=f["bare_floor"].get("note", ""))
    if "bare_read_floor" in f:
        add("Floor: bare Flask GET, one client, p50 / p99", _pair(f["bare_read_floor"], "p50", "p99"),
            note=f["bare_read_floor"].get("note", ""))

    def vs_floor(key: str, figure: str, floor: float | None, floor_unit: str, share: float | None) -> None:
        target = f">= {share:.0%} of floor" if share else ""
        if unavailable(key, figure, target):
            return
        fig = f[key]
        ratio = fig["value"] / floor if floor else None
        met = None if (share is None or ratio is None) else ratio >= share
        add(figure, _num(fig["value"], fig["unit"]), _num(floor, floor_unit), ratio, target, met, fig.get("note", ""))

    vs_floor("single_ingest", "Single-reading ingest, saturation", bare_floor, "req/s", 0.8)
    vs_floor("single_ingest_unguarded", "Single-reading ingest without access control (bench only)", bare_floor,
             "req/s", None)
    if not unavailable("access_control_cost", "Cost of device keys + rate limits on single ingest", "<= 10%"):
        fig = f["access_control_cost"]
        cost = fig["value"]
        add("Cost of device keys + rate limits on single ingest", "n/a" if cost is None else f"{cost:.1%}",
            target="<= 10%", met=None if cost is None else cost <= 0.10, note=fig.get("note", ""))
    if not unavailable("single_latency", "Single-reading ingest at a fixed 500 req/s, p50 / p99"):
        fig = f["single_latency"]
        add("Single-reading ingest at a fixed 500 req/s, p50 / p99", _pair(fig, "p50", "p99"),
            note=fig.get("note", ""))
    vs_floor("batched_accepted", "Batched ingest (500 a request), accepted", copy_floor, "rows/s", None)
    vs_floor("batched_accepted_no_drain", "Batched ingest, accepted with the workers stopped", copy_floor, "rows/s",
             None)
    vs_floor("batched_end_to_end", "Batched ingest, end to end until committed", copy_floor, "rows/s", 0.4)
    if "batched_bound" in f:
        vs_floor("batched_bound", "Batched end to end, bound: ingest alone + COPY floor, same cores",
                 copy_floor, "rows/s", None)

    def latency(key: str, figure: str, a: str, b: str, limit_ms: float) -> None:
        target = f"{b} <= {_num(limit_ms, 'ms')}"
        if unavailable(key, figure, target):
            return
        fig = f[key]
        met = None if fig.get(b) is None else fig[b] <= limit_ms
        add(figure, _pair(fig, a, b), target=target, met=met, note=fig.get("note", ""))

    latency("drain_lag", "Drain lag at 20,000 devices/minute, p50 / p99", "p50", "p99", 1000)
    vs_floor("catch_up", "Catch-up drain of the backlog", copy_floor, "rows/s", 0.4)
    if not unavailable("rollup_cpu_share", "Rollup maintenance CPU / drain CPU at steady load", "<= 15%"):
        share = f["rollup_cpu_share"]["value"]
        add("Rollup maintenance CPU / drain CPU at steady load", "n/a" if share is None else f"{share:.1%}",
            target="<= 15%", met=None if share is None else share <= 0.15, note=f["rollup_cpu_share"].get("note", ""))
    latency("analytics", "Analytics, 24 h window, p50 / p95", "p50", "p95", 10)
    latency("history_page", "History, 1,000-reading page, p50 / p95", "p50", "p95", 10)
    latency("history_buckets", "History, 24 hourly buckets, p50 / p95", "p50", "p95", 15)
    latency("history_csv", "History, CSV of a day (1,440 rows), p50 / p95", "p50", "p95", 30)
    if not unavailable("rollups_rebuild", "Rollups of the loaded day: rebuild"):
        add("Rollups of the loaded day: rebuild", _num(f["rollups_rebuild"]["seconds"], "s"),
            note=f["rollups_rebuild"].get("note", ""))
    latency("fleet_summary", "Fleet summary, 24 h, p50 / p95", "p50", "p95", 50)
    latency("fleet_ranking", "Fleet ranking, first page of 50, p50 / p95", "p50", "p95", 100)
    latency("vehicle_30d", "One vehicle's 30-day performance, p50 / p95", "p50", "p95", 15)
    latency("latest_one", "Latest state, one vehicle, p50 / p99", "p50", "p99", 2)
    latency("latest_multi", "Latest state, 1,000 vehicles, p50 / p99", "p50", "p99", 20)
    for key, figure in (("rss_web", "Peak RSS, web (per process)"), ("rss_worker", "Peak RSS, worker (per process)")):
        if not unavailable(key, figure):
            add(figure, _num(f[key]["value"], "MiB"), note=f[key].get("note", ""))
    target = f"flat (<= {FLAT_RSS_RATIO:g}x)"
    if not unavailable("rss_worker_growth", "Worker RSS: steady load -> backlog", target):
        fig = f["rss_worker_growth"]
        add("Worker RSS: steady load -> backlog", f"{_num(fig['steady'])} -> {_num(fig['backlog'])} MiB",
            target=target, met=fig["ratio"] <= FLAT_RSS_RATIO, note=f"x{fig['ratio']:.2f}")
    return rows


def markdown(rows: list[dict], results: dict) -> str:
    """Render the rows as a Markdown table, with the notes and the machine under it."""
    lines = ["| figure | measured | floor | ratio | target | met? |", "| --- | --- | --- | --- | --- | --- |"]
    notes = []
    for row in rows:
        mark = ""
        if row["note"]:
            notes.append(row["note"])
            mark = f" [{len(notes)}]"
        lines.append(f"| {row['figure']}{mark} | {row['measured']} | {row['floor']} | {row['ratio']} | "
                     f"{row['target']} | {row['met']} |")
    lines.append("")
    lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    machine = results.get("machine", {})
    if machine:
        lines.append("")
        lines.append(f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gib')} GiB; "
                     f"PostgreSQL {machine.get('postgres')}, Redis {machine.get('redis')}, Python "
                     f"{machine.get('python')}; commit {machine.get('commit')}; size {results.get('size')}, "
                     f"wall {results.get('wall_s')} s.")
    return "\n".join(lines) + "\n"
