"""Small charts as SVG geometry computed on the server (no charting script to ship or to allow in the CSP).

The templates draw what these functions return: bars, a polyline for the usual
pattern, axis labels. Values are numbers only, so nothing a user typed reaches a chart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 600, 180, 36, 22, 8


@dataclass
class Chart:
    title: str
    description: str
    """What the chart shows, in words (the SVG's accessible name; screen readers read it)."""
    bars: list[dict[str, float | str]] = field(default_factory=list)
    line: str = ""
    """``points`` of the usual-pattern polyline ("" if none)."""
    max_value: float = 0
    width: int = WIDTH
    height: int = HEIGHT
    labels: list[dict[str, float | str]] = field(default_factory=list)
    legend: list[dict[str, str]] = field(default_factory=list)


def bar_chart(title: str, description: str, labels: list[str], values: list[float], usual: list[float] | None = None,
              css: str = "bar", label_every: int = 1) -> Chart:
    """Bars for ``values`` (and a line for ``usual``), scaled to the larger of both; one x label every ``label_every`` bars."""
    top = max([1.0, *values, *(usual or [])])
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    step = plot_w / max(1, len(values))
    chart = Chart(title, description, max_value=top)
    for n, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * value / top
        x = LEFT + n * step
        chart.bars.append({"x": round(x + step * 0.1, 1), "y": round(TOP + plot_h - h, 1), "w": round(step * 0.8, 1),
                           "h": round(h, 1), "value": value, "label": label, "css": css})
        if n % label_every == 0:
            chart.labels.append({"x": round(x + step / 2, 1), "y": HEIGHT - 6, "text": label})
    if usual:
        chart.line = " ".join(f"{round(LEFT + (n + 0.5) * step, 1)},{round(TOP + plot_h - plot_h * u / top, 1)}"
                              for n, u in enumerate(usual))
        chart.legend.append({"css": "usual", "text": "usual for the hour (mean of the previous week)"})
    return chart
