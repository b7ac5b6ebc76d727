"""The tenant's dashboard: mail per hour or day, dispositions, verdicts, top symbols, sender
domains and route countries over 1, 7 or 30 days, as SVG drawn on the server (no script; colours
are SVG presentation attributes, which the CSP's style-src does not govern)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from mailmoat.admin.stats import PERIODS, Bucket, DashboardStats, dashboard_stats, period_days
from mailmoat_web.admin.access import TenantScope
from mailmoat_web.admin.render import render
from mailmoat_web.i18n import flag

router = APIRouter()

COLUMNS_WIDTH, COLUMNS_HEIGHT = 760, 220
ROWS_WIDTH, ROW_HEIGHT = 520, 26
_PLOT_LEFT, _PLOT_BOTTOM, _PLOT_TOP = 44, 28, 14
_LABEL_WIDTH = 190  # the horizontal bars' label column
_BAR_FILL = "#3f6fb5"
DISPOSITION_FILL = {"deliver": "#2e7d32", "quarantine": "#ef6c00", "drop": "#c62828",
                    "held": "#757575", "pending": "#1565c0"}
VERDICT_FILL = {"safe": "#2e7d32", "risky": "#f9a825", "encrypted": "#6a1b9a",
                "unsupported": "#757575", "danger": "#c62828"}


@router.get("/t/{tenant}/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, tenant: str, s: TenantScope) -> Response:
    days = period_days(request.query_params.get("days"))
    services = s.c.runtime.services
    stats = dashboard_stats(services.log, tenant, days, services.clock.now())
    return render(request, s.admin, s.cfg, "admin/dashboard.html", {
        "stats": stats, "periods": [(p, f"/admin/t/{tenant}/dashboard?days={p}") for p in PERIODS],
        "columns": column_chart(stats.buckets, stats.unit),
        "dispositions": bar_rows(stats.dispositions, DISPOSITION_FILL, "admin.disposition."),
        "verdicts": bar_rows(stats.verdicts, VERDICT_FILL, "verdict."),
        "symbols": bar_rows(stats.top_symbols),
        "domains": bar_rows(stats.top_sender_domains),
        "countries": bar_rows([(f"{flag(c)} {c}".strip(), n) for c, n in stats.route_countries]),
        "range": _range(stats)})


def column_chart(buckets: list[Bucket], unit: str) -> dict[str, Any]:
    """Vertical bars, one per bucket, on a scale rounded up to a readable top value."""
    top = nice_top(max((b.count for b in buckets), default=0))
    plot_w = COLUMNS_WIDTH - _PLOT_LEFT - 8
    plot_h = COLUMNS_HEIGHT - _PLOT_TOP - _PLOT_BOTTOM
    slot = plot_w / max(1, len(buckets))
    every = 3 if unit == "hour" else (1 if len(buckets) <= 7 else 5)
    bars, ticks = [], []
    for i, bucket in enumerate(buckets):
        h = plot_h * bucket.count / top if top else 0
        x = _PLOT_LEFT + i * slot
        label = bucket.start.strftime("%H:00" if unit == "hour" else "%m/%d")
        bars.append({"x": round(x + slot * 0.15, 1), "w": round(slot * 0.7, 1),
                     "y": round(_PLOT_TOP + plot_h - h, 1), "h": round(h, 1),
                     "count": bucket.count, "label": label})
        if i % every == 0:
            ticks.append({"x": round(x + slot / 2, 1), "label": label})
    grid = [{"y": round(_PLOT_TOP + plot_h - plot_h * f, 1), "value": round(top * f)}
            for f in (0.0, 0.5, 1.0)] if top else [{"y": _PLOT_TOP + plot_h, "value": 0}]
    return {"width": COLUMNS_WIDTH, "height": COLUMNS_HEIGHT, "bars": bars, "ticks": ticks,
            "grid": grid, "left": _PLOT_LEFT, "right": COLUMNS_WIDTH - 8,
            "axis_y": _PLOT_TOP + plot_h + 16}


def bar_rows(items: list[tuple[str, int]], fills: dict[str, str] | None = None,
             key_prefix: str = "") -> dict[str, Any]:
    """Horizontal bars, one row per (label, count). With `key_prefix` the template translates
    the label as a catalog key; otherwise it is shown as it came (escaped by the template)."""
    top = max((n for _, n in items), default=0)
    span = ROWS_WIDTH - _LABEL_WIDTH - 56
    rows = []
    for i, (label, count) in enumerate(items):
        rows.append({"label": label[:60], "key": f"{key_prefix}{label}" if key_prefix else "",
                     "count": count, "y": i * ROW_HEIGHT,
                     "w": round(span * count / top, 1) if top else 0,
                     "fill": (fills or {}).get(label, _BAR_FILL)})
    return {"width": ROWS_WIDTH, "height": max(1, len(rows)) * ROW_HEIGHT, "rows": rows,
            "bar_x": _LABEL_WIDTH, "label_x": _LABEL_WIDTH - 8}


def nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (0 stays 0)."""
    if value <= 0:
        return 0
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def _range(stats: DashboardStats) -> str:
    fmt = "%Y-%m-%d %H:%M"
    return f"{stats.since.strftime(fmt)} – {stats.until.strftime(fmt)}"
