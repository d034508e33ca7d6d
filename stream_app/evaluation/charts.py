"""Charts for the eval and replay reports: small, self-contained SVG, no plotting library.

Pure Python and deterministic: the same figures give the same bytes, so a chart diffs
like text. Each SVG carries its own white background and uses the generic sans-serif
font (no web fonts, nothing fetched): it renders offline, in a browser, an editor's
Markdown preview or on GitHub.

Two drawing functions (``line_chart``, ``histogram_chart``) and, on top of them, the
charts each report gets (``eval_charts``, ``drift_charts``, ``replay_charts``) built
from the report's own JSON; ``write_charts`` writes them next to the Markdown and
returns the Markdown that embeds them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

# Tableau 10: distinct in colour, and in lightness for most pairs.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]
DASHES = ["", "6 4", "2 3", "8 3 2 3"]
FONT = "Helvetica, Arial, 'DejaVu Sans', sans-serif"

WIDTH = 760
PLOT_HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 72, 28, 56, 58
LEGEND_ROW = 18


@dataclass(frozen=True)
class Series:
    """One line (or set of markers) of a line chart."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str | None = None  # from the palette, by position, when None
    dash: str | None = None  # an SVG dasharray; by position past the palette when None
    line: bool = True
    step: bool = False  # a step function: horizontal to the next x, then vertical
    marker: str | None = None  # "circle", "square", "cross", "diamond"
    notes: Sequence[str] | None = None  # a tooltip per point (SVG <title>)


@dataclass(frozen=True)
class Chart:
    """A chart a report embeds: ``{report}-{slug}.svg``, its title and a caption."""

    slug: str
    title: str
    svg: str
    caption: str = ""


# ---------------------------------------------------------------------------- numbers

def _num(v: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros (deterministic, compact)."""
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def nice_ticks(lo: float, hi: float, count: int = 6,
               integer: bool = False) -> tuple[list[float], int]:
    """Ticks at 1/2/2.5/5 x 10^k covering [lo, hi], and the decimals their labels need."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = mag
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = m * mag
        if step >= raw * 0.999:
            break
    if integer:
        step = max(1.0, round(step))
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    ticks = [k * step for k in range(first, last + 1)]
    decimals = 0 if step >= 1 else max(0, -math.floor(math.log10(step) + 1e-9))
    if decimals and abs(round(step, decimals) - step) > 1e-12:
        decimals += 1  # 0.25, 0.025
    return ticks, decimals


def _fmt(decimals: int) -> Callable[[float], str]:
    def fmt(v: float) -> str:
        text = f"{v:,.{decimals}f}"
        return text[1:] if text.startswith("-") and not text.strip("-0.,") else text
    return fmt


def percent(v: float) -> str:
    return f"{v * 100:.0f}%"


_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86400.0
_SECOND_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
                 21600, 43200, 86400, 2 * 86400, 7 * 86400, 14 * 86400]
_MONTH_STEPS = [1, 2, 3, 6]
_YEAR_STEPS = [1, 2, 5, 10, 20, 50, 100]


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def time_ticks(lo: float, hi: float,
               count: int = 6) -> tuple[list[float], Callable[[float], str], str]:
    """Calendar-aligned ticks (UTC) within [lo, hi] for Unix seconds: the ticks, their
    label format, and a note for the axis label (the date, where the labels lack it)."""
    if hi <= lo:
        hi = lo + 60.0
    raw = (hi - lo) / max(1, count)
    ticks: list[float]
    if raw <= _SECOND_STEPS[-1]:
        step = next(s for s in _SECOND_STEPS if s >= raw)
        ticks = [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
        if step < _MINUTE:
            fmt = "%H:%M:%S"
        elif step < _DAY:
            fmt = "%H:%M" if _utc(lo).date() == _utc(hi).date() else "%m-%d %H:%M"
        else:
            fmt = "%Y-%m-%d"
    else:
        start = _utc(lo)
        if raw <= 6 * 30.44 * _DAY:
            months = next(m for m in _MONTH_STEPS if m * 30.44 * _DAY >= raw)
            fmt, index = "%Y-%m", start.year * 12 + start.month - 1
            index += (-index) % months
            ticks = []
            while True:
                t = datetime(index // 12, index % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
                if t > hi:
                    break
                if t >= lo:
                    ticks.append(t)
                index += months
        else:
            years = next((y for y in _YEAR_STEPS if y * 365.25 * _DAY >= raw), _YEAR_STEPS[-1])
            fmt, year = "%Y", start.year + (-start.year) % years
            ticks = []
            while year <= 9999:
                t = datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()
                if t > hi:
                    break
                if t >= lo:
                    ticks.append(t)
                year += years
    note = "UTC"
    if "%H" in fmt and "%d" not in fmt:  # clock times only: say which day
        note = f"UTC, {_utc(lo).strftime('%Y-%m-%d')}"
    return ticks, (lambda t: _utc(t).strftime(fmt)), note


# ------------------------------------------------------------------------------- SVG

class _Canvas:
    """The frame every chart shares: title, plot area, axes, grid and a legend below."""

    def __init__(self, title: str, legend_rows: int, right_axis: bool = False,
                 width: int = WIDTH, plot_height: int = PLOT_HEIGHT) -> None:
        self.left, self.top = LEFT, TOP
        self.right = width - (RIGHT + 44 if right_axis else RIGHT)
        self.bottom = TOP + plot_height
        self.width = width
        self.legend_top = self.bottom + BOTTOM
        self.height = self.legend_top + legend_rows * LEGEND_ROW + (10 if legend_rows else 0)
        self.out: list[str] = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{self.height}" '
            f'viewBox="0 0 {width} {self.height}" font-family={quoteattr(FONT)} '
            'font-size="12" role="img">',
            f"<title>{escape(title)}</title>",
            f'<rect x="0" y="0" width="{width}" height="{self.height}" fill="#ffffff"/>',
            f'<text class="title" x="{width / 2:g}" y="24" text-anchor="middle" '
            f'font-size="15" font-weight="bold" fill="#222222">{escape(title)}</text>',
            '<defs><clipPath id="plot-area">'
            f'<rect x="{self.left}" y="{self.top - 4}" width="{self.right - self.left}" '
            f'height="{self.bottom - self.top + 8}"/></clipPath></defs>',
        ]
        self.legend_n = 0

    def scale(self, lo: float, hi: float, vertical: bool) -> Callable[[float], float]:
        span = (hi - lo) or 1.0
        if vertical:
            return lambda v: self.bottom - (v - lo) / span * (self.bottom - self.top)
        return lambda v: self.left + (v - lo) / span * (self.right - self.left)

    def x_axis(self, ticks: Sequence[float], fx: Callable[[float], float],
               label: Callable[[float], str], title: str) -> None:
        parts = ['<g class="x-axis" font-size="11" fill="#444444">',
                 f'<line x1="{self.left}" y1="{self.bottom}" x2="{self.right}" '
                 f'y2="{self.bottom}" stroke="#444444"/>']
        for t in ticks:
            x = _num(fx(t))
            parts.append(f'<line x1="{x}" y1="{self.bottom}" x2="{x}" y2="{self.bottom + 5}" '
                         'stroke="#444444"/>')
            parts.append(f'<text x="{x}" y="{self.bottom + 18}" text-anchor="middle">'
                         f"{escape(label(t))}</text>")
        parts.append(f'<text class="axis-label" x="{(self.left + self.right) / 2:g}" '
                     f'y="{self.bottom + 40}" text-anchor="middle" font-size="12" '
                     f'fill="#222222">{escape(title)}</text>')
        parts.append("</g>")
        self.out += parts

    def y_axis(self, ticks: Sequence[float], fy: Callable[[float], float],
               label: Callable[[float], str], title: str, right: bool = False,
               grid: bool = True) -> None:
        x0 = self.right if right else self.left
        tick = 5 if right else -5
        anchor = "start" if right else "end"
        parts = [f'<g class="y-axis{"-right" if right else ""}" font-size="11" fill="#444444">',
                 f'<line x1="{x0}" y1="{self.top}" x2="{x0}" y2="{self.bottom}" '
                 'stroke="#444444"/>']
        for t in ticks:
            y = _num(fy(t))
            if grid:
                parts.append(f'<line class="grid" x1="{self.left}" y1="{y}" x2="{self.right}" '
                             f'y2="{y}" stroke="#e4e4e4"/>')
            parts.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + tick}" y2="{y}" '
                         'stroke="#444444"/>')
            parts.append(f'<text x="{x0 + tick * 1.6:g}" y="{_num(fy(t) + 4)}" '
                         f'text-anchor="{anchor}">{escape(label(t))}</text>')
        cx = (x0 + 58) if right else (x0 - 56)
        cy = (self.top + self.bottom) / 2
        parts.append(f'<text class="axis-label" x="{cx:g}" y="{cy:g}" text-anchor="middle" '
                     f'font-size="12" fill="#222222" transform="rotate(-90 {cx:g} {cy:g})">'
                     f"{escape(title)}</text>")
        parts.append("</g>")
        self.out += parts  # before the series: the grid lies under them

    def legend(self, name: str, color: str, dash: str = "", marker: str | None = None,
               line: bool = True, box: bool = False) -> None:
        y = self.legend_top + self.legend_n * LEGEND_ROW + 8
        x = self.left
        parts = ['<g class="legend-entry">']
        if box:
            parts.append(f'<rect x="{x}" y="{y - 6}" width="22" height="12" fill="{color}" '
                         'fill-opacity="0.75"/>')
        elif line:
            parts.append(f'<line x1="{x}" y1="{y}" x2="{x + 22}" y2="{y}" stroke="{color}" '
                         f'stroke-width="2.5"{_dash(dash)}/>')
        if marker:
            parts.append(_marker(marker, x + 11, y, color))
        parts.append(f'<text x="{x + 30}" y="{y + 4}" fill="#222222">{escape(name)}</text>')
        parts.append("</g>")
        self.out += parts
        self.legend_n += 1

    def note(self, text: str) -> None:
        """A line under the title."""
        self.out.append(f'<text class="note" x="{self.width / 2:g}" y="42" '
                        f'text-anchor="middle" font-size="12" fill="#555555">'
                        f"{escape(text)}</text>")

    def done(self) -> str:
        return "\n".join([*self.out, "</svg>"]) + "\n"


def _dash(dash: str) -> str:
    return f' stroke-dasharray="{dash}"' if dash else ""


def _marker(kind: str, x: float, y: float, color: str, note: str | None = None) -> str:
    cx, cy = _num(x), _num(y)
    tip = f"<title>{escape(note)}</title>" if note else ""
    if kind == "square":
        shape = (f'<rect x="{_num(x - 4)}" y="{_num(y - 4)}" width="8" height="8" '
                 f'fill="{color}"')
    elif kind == "cross":
        shape = (f'<path d="M{_num(x - 4)} {_num(y - 4)}L{_num(x + 4)} {_num(y + 4)}'
                 f'M{_num(x - 4)} {_num(y + 4)}L{_num(x + 4)} {_num(y - 4)}" '
                 f'stroke="{color}" stroke-width="2" fill="none"')
    elif kind == "diamond":
        shape = (f'<path d="M{cx} {_num(y - 5)}L{_num(x + 5)} {cy}L{cx} {_num(y + 5)}'
                 f'L{_num(x - 5)} {cy}Z" fill="{color}"')
    else:
        shape = f'<circle cx="{cx}" cy="{cy}" r="4" fill="{color}" stroke="#ffffff"'
    return f"{shape}>{tip}</{shape.split()[0][1:]}>" if tip else f"{shape}/>"


def _path(points: Sequence[tuple[float, float]], step: bool) -> str:
    out = []
    for n, (x, y) in enumerate(points):
        if n == 0:
            out.append(f"M{_num(x)} {_num(y)}")
        elif step:
            out.append(f"H{_num(x)}V{_num(y)}")
        else:
            out.append(f"L{_num(x)} {_num(y)}")
    return "".join(out)


def _finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]


def line_chart(series: Sequence[Series], title: str, x_label: str, y_label: str, *,
               x_time: bool = False, x_integer: bool = False,
               y_range: tuple[float | None, float | None] = (None, None),
               x_range: tuple[float | None, float | None] = (None, None),
               y_format: Callable[[float], str] | None = None,
               x_format: Callable[[float], str] | None = None,
               note: str = "") -> str:
    """Lines (or markers) over one x axis, with ticks, grid, axis labels and a legend.

    ``x_time``: x is Unix seconds, ticks at calendar steps in UTC. ``y_range`` /
    ``x_range``: a fixed end (None: from the data, widened to a tick)."""
    drawn = [(s, _finite(s.points)) for s in series]
    xs = [x for _, pts in drawn for x, _ in pts]
    ys = [y for _, pts in drawn for _, y in pts]
    canvas = _Canvas(title, len(series))
    x_lo = x_range[0] if x_range[0] is not None else (min(xs) if xs else 0.0)
    x_hi = x_range[1] if x_range[1] is not None else (max(xs) if xs else 1.0)
    if x_time:
        if x_hi <= x_lo:
            x_lo, x_hi = x_lo - 30.0, x_hi + 30.0
        x_ticks, x_fmt, tz_note = time_ticks(x_lo, x_hi)
        x_label = f"{x_label} ({tz_note})"
    else:
        x_ticks, dec = nice_ticks(x_lo, x_hi, integer=x_integer)
        if None in x_range:  # from the data: out to the ticks; fixed: ticks within
            x_lo, x_hi = min(x_ticks[0], x_lo), max(x_ticks[-1], x_hi)
        else:
            x_ticks = [t for t in x_ticks if x_lo - 1e-9 <= t <= x_hi + 1e-9] or x_ticks
        x_fmt = x_format or _fmt(dec)
    y_lo = y_range[0] if y_range[0] is not None else (min(ys) if ys else 0.0)
    y_hi = y_range[1] if y_range[1] is not None else (max(ys) if ys else 1.0)
    y_ticks, dec = nice_ticks(y_lo, y_hi)
    y_ticks = [t for t in y_ticks if (y_range[0] is None or t >= y_range[0] - 1e-9)
               and (y_range[1] is None or t <= y_range[1] + 1e-9)] or y_ticks
    y_lo, y_hi = min(y_ticks[0], y_lo), max(y_ticks[-1], y_hi)
    fx, fy = canvas.scale(x_lo, x_hi, False), canvas.scale(y_lo, y_hi, True)
    canvas.y_axis(y_ticks, fy, y_format or _fmt(dec), y_label)
    canvas.x_axis(x_ticks, fx, x_fmt, x_label)
    if note:
        canvas.note(note)
    for n, (s, pts) in enumerate(drawn):
        color = s.color or PALETTE[n % len(PALETTE)]
        dash = s.dash if s.dash is not None else DASHES[(n // len(PALETTE)) % len(DASHES)]
        parts = [f'<g class="series" data-name={quoteattr(s.name)} clip-path="url(#plot-area)">']
        screen = [(fx(x), fy(y)) for x, y in pts]
        if s.line and len(screen) > 1:
            parts.append(f'<path d="{_path(screen, s.step)}" fill="none" stroke="{color}" '
                         f'stroke-width="2" stroke-linejoin="round"{_dash(dash)}/>')
        if s.marker or (s.line and len(screen) == 1):
            notes = list(s.notes or [])
            parts += [_marker(s.marker or "circle", x, y, color,
                              notes[k] if k < len(notes) else None)
                      for k, (x, y) in enumerate(screen)]
        parts.append("</g>")
        canvas.out += parts
        canvas.legend(s.name, color, dash, s.marker, s.line)
    return canvas.done()


def histogram_chart(edges: Sequence[float], counts: Sequence[int], title: str,
                    x_label: str, y_label: str, *,
                    cdf: Sequence[tuple[float, float]] = (), bars_name: str = "events",
                    cdf_name: str = "cumulative share (right axis)", note: str = "") -> str:
    """Bars over ``edges`` (len(counts) + 1 of them) and, when given, a cumulative
    distribution (x, share 0..1) on a right-hand percent axis."""
    canvas = _Canvas(title, 1 + bool(cdf), right_axis=bool(cdf))
    lo = float(edges[0]) if len(edges) else 0.0
    hi = float(edges[-1]) if len(edges) else 1.0
    x_ticks, x_dec = nice_ticks(lo, hi)
    x_lo, x_hi = min(x_ticks[0], lo), max(x_ticks[-1], hi)
    top = max(counts) if counts else 1
    y_ticks, y_dec = nice_ticks(0.0, float(top or 1), integer=True)
    y_ticks = [t for t in y_ticks if t >= 0]
    fx, fy = canvas.scale(x_lo, x_hi, False), canvas.scale(0.0, y_ticks[-1], True)
    canvas.y_axis(y_ticks, fy, _fmt(y_dec), y_label)
    if cdf:
        fr = canvas.scale(0.0, 1.0, True)
        canvas.y_axis([k / 5 for k in range(6)], fr, percent, "cumulative share", right=True,
                      grid=False)
    canvas.x_axis(x_ticks, fx, _fmt(x_dec), x_label)
    if note:
        canvas.note(note)
    parts = ['<g class="bars">']
    for n, count in enumerate(counts):
        x0, x1 = fx(edges[n]), fx(edges[n + 1])
        if count:
            parts.append(f'<rect x="{_num(x0)}" y="{_num(fy(count))}" '
                         f'width="{_num(max(0.5, x1 - x0 - 1))}" '
                         f'height="{_num(fy(0) - fy(count))}" fill="{PALETTE[0]}" '
                         f'fill-opacity="0.75"><title>{escape(_fmt(x_dec + 1)(edges[n]))}-'
                         f'{escape(_fmt(x_dec + 1)(edges[n + 1]))}: {count}</title></rect>')
    parts.append("</g>")
    canvas.out += parts
    canvas.legend(bars_name, PALETTE[0], box=True)
    if cdf:
        fr = canvas.scale(0.0, 1.0, True)
        pts = [(fx(min(max(x, x_lo), x_hi)), fr(y)) for x, y in _finite(cdf)]
        canvas.out += [f'<g class="series" data-name={quoteattr(cdf_name)} '
                       'clip-path="url(#plot-area)">',
                       f'<path d="{_path(pts, False)}" fill="none" stroke="{PALETTE[2]}" '
                       'stroke-width="2"/>', "</g>"]
        canvas.legend(cdf_name, PALETTE[2])
    return canvas.done()


# ------------------------------------------------------------------- report charts

def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "chart"


def rolling_hr(windows: Sequence[Mapping[str, Any]], span: int) -> list[tuple[float, float]]:
    """(event time at a window's end, HR@10 of the judged events in it and the ``span``
    - 1 windows before it); windows nobody was judged in are skipped."""
    out = []
    for n, w in enumerate(windows):
        recent = windows[max(0, n - span + 1):n + 1]
        judged = sum(r["judged"] for r in recent)
        if judged and w["judged"]:
            out.append((float(w["last_ts"]), sum(r["hits"] for r in recent) / judged))
    return out


def prequential_chart(curves: Mapping[str, Mapping[str, Any]]) -> Chart | None:
    """Rolling prequential HR@10 over event time, one line per variant."""
    curves = {name: c for name, c in curves.items() if c.get("windows")}
    if not curves:
        return None
    n_windows = max(len(c["windows"]) for c in curves.values())
    span = max(1, round(n_windows / 20))
    share = span / n_windows
    series = [Series(name, rolling_hr(c["windows"], span)) for name, c in curves.items()]
    share_text = f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"
    svg = line_chart(series, "Prequential HR@10 over event time", "event time",
                     f"HR@10, last {share_text} of events", x_time=True, y_range=(0.0, None))
    caption = (f"Each point: the share of judged events whose item was in the top 10 "
               f"recommended after the user's previous event, over the {share_text} of the "
               f"stream that ends at that event time ({n_windows} windows of equal event "
               "count; their totals are the table's prequential HR@10).")
    return Chart("prequential-hr", "Prequential HR@10 over event time", svg, caption)


def rounds_chart(rounds: Sequence[Mapping[str, Any]], variant: str = "",
                 slug_suffix: str = "") -> Chart | None:
    """Held-out NDCG@10 per trainer round: the candidate, the version it was judged
    against and the plain encoder; promoted, refused and reverted rounds marked."""
    if not rounds:
        return None
    xs = list(range(1, len(rounds) + 1))
    labels = {"candidate": "candidate (the round's new version)",
              "current": "version in use when judged",
              "base": "plain encoder (no trained model)"}
    keys = [k for k in ("candidate", "current", "base") if any(f"ndcg_{k}" in r for r in rounds)]
    series = [Series(labels[k],
                     [(x, r[f"ndcg_{k}"]) for x, r in zip(xs, rounds)
                      if r.get(f"ndcg_{k}") is not None],
                     dash="" if k == "candidate" else "6 4" if k == "current" else "2 3",
                     color=PALETTE[n])
              for n, k in enumerate(keys)]

    def marked(pick: Callable[[Mapping[str, Any]], bool]) -> tuple[list, list]:
        chosen = [(x, r) for x, r in zip(xs, rounds) if pick(r)]
        return ([(x, r.get("ndcg_candidate", 0.0) or 0.0) for x, r in chosen],
                [f"round {x}: version {r.get('version')}"
                 + (f", reverted to {r['reverted_to']}" if r.get("reverted_to") else "")
                 for x, r in chosen])

    for name, pick, marker, color in (
            ("promoted", lambda r: bool(r.get("promoted")), "circle", "#2a9d3a"),
            ("refused", lambda r: not r.get("promoted") and not r.get("reverted_to"),
             "cross", "#c0392b"),
            ("refused; reverted to the plain encoder", lambda r: bool(r.get("reverted_to")),
             "square", "#7f3c8d")):
        points, notes = marked(pick)
        if points:
            series.append(Series(f"{name} ({len(points)})", points, color=color,
                                 line=False, marker=marker, notes=notes))
    promoted = sum(1 for r in rounds if r.get("promoted"))
    title = "Trainer rounds: held-out NDCG@10 per version"
    svg = line_chart(series, title, "round", "held-out NDCG@10", x_integer=True,
                     y_range=(0.0, None), x_range=(0.5 if len(xs) > 1 else 0.0, len(xs) + 0.5),
                     note=(f"{variant}: " if variant else "")
                     + f"{len(rounds)} rounds, {promoted} promoted")
    caption = ("Each round trains a candidate version on the newest examples and scores it, "
               "the version in use and the plain encoder on a held-out window; a marker "
               "says what the round decided (hover: the version).")
    return Chart("trainer-rounds" + slug_suffix,
                 "Trainer rounds" + (f" — {variant}" if variant else ""), svg, caption)


def latency_chart(distribution: Mapping[str, Any]) -> Chart | None:
    """Event -> recommendation latency: histogram up to the 99th percentile, and the CDF."""
    hist = distribution.get("histogram") or {}
    if not hist.get("counts"):
        return None
    quantiles = distribution.get("quantiles_ms") or []
    cdf = [(q, n / (len(quantiles) - 1)) for n, q in enumerate(quantiles)
           if q <= hist["edges_ms"][-1]] if len(quantiles) > 1 else []
    above = hist.get("above", 0)
    total = sum(hist["counts"]) + above
    note = f"{total} events" + (f"; {above} slower than {hist['edges_ms'][-1]:g} ms not shown"
                                if above else "")
    svg = histogram_chart(hist["edges_ms"], hist["counts"],
                          "Latency: event sent → recommendation emitted",
                          "latency (ms)", "events", cdf=cdf, note=note)
    caption = ("Time from the replay sending an event to the worker emitting its "
               "recommendation; bars up to the 99th percentile, the line is the cumulative "
               "share (right axis).")
    return Chart("latency", "Event → recommendation latency", svg, caption)


def lag_cdf(lags: Sequence[int], events: int) -> list[tuple[float, float]]:
    """(n, share of users whose lag is at most n) for n in 0..``events`` (a phase's
    length: a lag past it means never, so the line can end below 100%)."""
    total = len(lags) or 1
    return [(k, sum(1 for x in lags if x <= k) / total) for k in range(0, events + 1)]


def drift_chart(rows: Sequence[Mapping[str, Any]]) -> Chart | None:
    """Per variant, the share of simulated users whose top 10 has followed the switch
    (solid) and the way back (dashed) within n events."""
    rows = [r for r in rows if r.get("adaptation_lags")]
    if not rows:
        return None

    def phase(r: Mapping[str, Any], kind: str, lags: Sequence[int]) -> int:
        # older reports lack phase_events: the longest lag, "never" included
        return int((r.get("phase_events") or {}).get(kind) or max(lags))

    series: list[Series] = []
    lengths = {"adaptation": 0, "return": 0}
    for n, r in enumerate(rows):
        color = PALETTE[n % len(PALETTE)]
        for kind, key, dash, label in (("adaptation", "adaptation_lags", "", "after the switch"),
                                       ("return", "return_lags", "6 4", "after coming back")):
            if r.get(key):
                length = phase(r, kind, r[key])
                lengths[kind] = max(lengths[kind], length)
                series.append(Series(f"{r['variant']}: {label}", lag_cdf(r[key], length),
                                     color=color, dash=dash, step=True))
    longest = max(lengths.values())
    phases = " and ".join(f"{n} {what}" for n, what in (
        (lengths["adaptation"], "events after the switch"),
        (lengths["return"], "after coming back")) if n)
    svg = line_chart(series, "Drift: how fast the top 10 follows a change of taste",
                     "events into the new phase", "share of users adapted", x_integer=True,
                     y_range=(0.0, 1.0), x_range=(0.0, float(longest)), y_format=percent,
                     note=f"{rows[0]['users']} simulated users; phases of {phases}")
    caption = ("Share of simulated users whose top 10 is at least half the new genre (after "
               "the switch, solid) or the old one again (after coming back, dashed) within n "
               "events of the phase; a line that rises sooner adapts faster, one that ends "
               "below 100% left the rest unadapted by the phase's end.")
    return Chart("lag", "Drift adaptation and return lag", svg, caption)


def eval_charts(rows: Sequence[Mapping[str, Any]],
                curves: Mapping[str, Mapping[str, Any]]) -> list[Chart]:
    """`eval DATASET`: prequential HR@10 over time; trainer rounds per fine-tuned variant."""
    charts = [prequential_chart(curves)]
    trained = [r for r in rows if r.get("training_rounds")]
    for r in trained:
        charts.append(rounds_chart(r["training_rounds"], r["variant"],
                                   "" if len(trained) == 1 else "-" + slug(r["variant"])))
    return [c for c in charts if c is not None]


def drift_charts(rows: Sequence[Mapping[str, Any]]) -> list[Chart]:
    """`eval --drift`: adaptation and return lag per variant."""
    return [c for c in [drift_chart(rows)] if c is not None]


def replay_charts(label: str, result: Mapping[str, Any]) -> list[Chart]:
    """`replay`: prequential HR@10 over time, latency, and trainer rounds when fine-tuning."""
    charts = [prequential_chart({label: result.get("prequential_windows") or {}}),
              latency_chart(result.get("latency_distribution") or {}),
              rounds_chart(result.get("training_rounds") or [], label)]
    return [c for c in charts if c is not None]


def write_charts(out: Path, name: str, charts: Sequence[Chart]) -> str:
    """Each chart as ``{name}-{slug}.svg`` in ``out``; the Markdown that embeds them
    (relative paths: the charts lie next to the Markdown)."""
    if not charts:
        return ""
    parts = ["", "", "## charts"]
    for chart in charts:
        file = f"{name}-{chart.slug}.svg"
        (out / file).write_text(chart.svg, encoding="utf-8")
        parts += ["", f"### {chart.title}", "", f"![{chart.title}]({file})"]
        if chart.caption:
            parts += ["", chart.caption]
    return "\n".join(parts)
