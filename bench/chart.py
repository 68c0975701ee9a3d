"""Latency distributions as a PNG, drawn with Pillow (no matplotlib).

One panel per scenario: each series' percentiles on a log time axis (x), with
the vertical axis stretched towards the tail (-log10(1 - q), so p50, p90, p99
and p99.9 are evenly spaced), p50 and p99 circled, the goal a dashed red line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.common import percentile

W, PANEL_H = 1100, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 80, 250, 36, 44
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.3g} s"
    if v >= 1:
        return f"{v:.3g} ms"
    return f"{v * 1000:.3g} us"


def _tail(q: float) -> float:
    """Vertical position of percentile q (0..1): 0 at p0, 1 at p90, 2 at p99, 3 at p99.9."""
    return -math.log10(max(1.0 - q, 1e-3))


def draw(path: Path, panels: list[dict[str, Any]]) -> Path | None:
    """panels: [{"title": str, "series": {label: [ms, ...]}, "goals": [(ms, label), ...]}]"""
    from PIL import Image, ImageDraw

    panels = [p for p in panels if any(p["series"].values())]
    if not panels:
        return None
    img = Image.new("RGB", (W, PANEL_H * len(panels)), "white")
    d = ImageDraw.Draw(img)
    title_font, font, small = _font(16), _font(13), _font(11)
    for n, panel in enumerate(panels):
        top = n * PANEL_H
        x0, x1 = MARGIN_L, W - MARGIN_R
        y0, y1 = top + MARGIN_T, top + PANEL_H - MARGIN_B
        values = [v for s in panel["series"].values() for v in s if v > 0]
        goals = [(g, label) for g, label in panel.get("goals", []) if g and g > 0]
        lo = min(values + [g for g, _ in goals])
        hi = max(values + [g for g, _ in goals])
        lo_e = math.floor(math.log10(lo))
        hi_e = math.ceil(math.log10(hi)) if hi > lo else lo_e + 1

        def xpos(v: float) -> float:
            v = max(v, 10**lo_e)
            return x0 + (math.log10(v) - lo_e) / (hi_e - lo_e) * (x1 - x0)

        top_tail = 3.0

        def ypos(q: float) -> float:
            return y1 - min(_tail(q), top_tail) / top_tail * (y1 - y0)

        d.text((x0, top + 8), panel["title"], fill="black", font=title_font)
        d.rectangle([x0, y0, x1, y1], outline=(160, 160, 160))
        for e in range(lo_e, hi_e + 1):
            for m in (1, 2, 5):
                v = m * 10**e
                if not 10**lo_e <= v <= 10**hi_e:
                    continue
                x = xpos(v)
                d.line([x, y0, x, y1], fill=(225, 225, 225) if m == 1 else (242, 242, 242))
                if m == 1 or (hi_e - lo_e) <= 2:
                    d.text((x - 14, y1 + 6), _fmt(v), fill=(80, 80, 80), font=small)
        for q, label in ((0.0, "p0"), (0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")):
            y = ypos(q)
            d.line([x0, y, x1, y], fill=(235, 235, 235))
            d.text((x0 - 40, y - 7), label, fill=(80, 80, 80), font=small)
        for k, (goal, label) in enumerate(goals):
            gx = xpos(goal)
            for yy in range(int(y0), int(y1), 8):
                d.line([gx, yy, gx, min(yy + 4, y1)], fill=(200, 0, 0), width=2)
            text = f"{label} {_fmt(goal)}"
            width = d.textlength(text, font=small) if hasattr(d, "textlength") else 6 * len(text)
            d.text((gx - width - 4, y0 + 4 + 14 * k), text, fill=(200, 0, 0), font=small)
        legend_y = y0
        for k, (label, series) in enumerate(panel["series"].items()):
            if not series:
                continue
            color = COLORS[k % len(COLORS)]
            ordered = sorted(series)
            count = len(ordered)
            step = max(1, count // 1500)
            points = [(xpos(v), ypos(i / count)) for i, v in enumerate(ordered) if i % step == 0 or i >= count - 20]
            if len(points) > 1:
                d.line(points, fill=color, width=2)
            for q in (50, 99):
                v = percentile(series, q)
                d.ellipse([xpos(v) - 4, ypos(q / 100) - 4, xpos(v) + 4, ypos(q / 100) + 4], outline=color, width=2)
            d.line([x1 + 14, legend_y + 8, x1 + 34, legend_y + 8], fill=color, width=3)
            d.text((x1 + 40, legend_y), label, fill="black", font=font)
            d.text((x1 + 40, legend_y + 16),
                   f"p50 {_fmt(percentile(series, 50))}, p99 {_fmt(percentile(series, 99))}, n={count}",
                   fill=(80, 80, 80), font=small)
            legend_y += 40
        d.text((x0 + (x1 - x0) // 2 - 80, y1 + 22), "latency (log scale); vertical: percentile",
               fill=(80, 80, 80), font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
