"""A plain-Python statement of the counter rules (the issue's words), the oracle of the property tests."""

from __future__ import annotations

from datetime import datetime, timedelta

NEIGHBOUR_HORIZON = timedelta(days=7)


def contributions(points: list[tuple[datetime, float]], max_power_kw: float) -> list[tuple[datetime, float, str]]:
    """Return (ts, energy, flag) per reading of a device; flag is '', 'glitch', 'reset' or 'implausible'."""
    points = sorted(points)
    out = []
    for i, (ts, v) in enumerate(points):
        prev = points[i - 1] if i >= 1 and ts - points[i - 1][0] <= NEIGHBOUR_HORIZON else None
        prev2 = points[i - 2] if prev and i >= 2 and prev[0] - points[i - 2][0] <= NEIGHBOUR_HORIZON else None
        nxt = points[i + 1] if i + 1 < len(points) and points[i + 1][0] - ts <= NEIGHBOUR_HORIZON else None
        if prev and v < prev[1] and nxt and nxt[1] >= prev[1]:
            out.append((ts, 0.0, "glitch"))
            continue
        if prev2 and prev[1] < prev2[1] and v >= prev2[1]:  # the previous reading was a glitch
            prev = prev2
        if prev is None or v == prev[1]:
            out.append((ts, 0.0, ""))
        elif v < prev[1]:
            out.append((ts, 0.0, "reset"))
        elif (v - prev[1]) / ((ts - prev[0]).total_seconds() / 3600) > max_power_kw:
            out.append((ts, 0.0, "implausible"))
        else:
            out.append((ts, v - prev[1], ""))
    return out


def window_energy(points, from_ts: datetime, to_ts: datetime, max_power_kw: float) -> dict:
    """Energy and counts of the readings in (from_ts, to_ts]."""
    inside = [c for c in contributions(points, max_power_kw) if from_ts < c[0] <= to_ts]
    return {
        "energy": sum(e for _, e, _ in inside),
        "resets": sum(1 for *_, f in inside if f == "reset"),
        "glitches": sum(1 for *_, f in inside if f == "glitch"),
        "implausible": sum(1 for *_, f in inside if f == "implausible"),
        "readings": len(inside),
    }
