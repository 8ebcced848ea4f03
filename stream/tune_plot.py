"""The precision-recall curves of ``vigil tune`` as one PNG, a panel per (detector, segment).

matplotlib is imported here, inside the function, so the CLI starts without it; the figure
is drawn on an Agg canvas directly, without pyplot's global state or a display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from detectors.tuning import SegmentTune

_COLUMNS = 3


def plot_curves(tuned: Sequence[SegmentTune], target: float, path: Path) -> None:
    """Precision and its Wilson lower bound against recall, the target and the chosen point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = max(len(tuned), 1)
    columns = min(_COLUMNS, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4.2 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, item in zip(axes, tuned, strict=False):
        curve = item.result.curve
        recall = [row.recall for row in curve]
        ax.step(recall, [row.precision for row in curve], where="post", label="precision")
        ax.step(
            recall,
            [row.wilson_lb for row in curve],
            where="post",
            linestyle="--",
            label="Wilson lower bound",
        )
        ax.axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
        if math.isnan(item.precision) or math.isnan(item.recall):
            ax.text(0.5, 0.5, "no labels at the threshold", ha="center", transform=ax.transAxes)
        else:
            ax.plot(
                [item.recall],
                [item.precision],
                marker="o",
                color="red",
                linestyle="none",
                label=f"chosen ({item.source})",
            )
        ax.set_title(f"{item.detector}  {item.segment}\nthreshold {item.threshold:.4g}", fontsize=9)
        ax.set_xlim(0.0, 1.02)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("recall (labeled)")
        ax.set_ylabel("precision")
        ax.legend(fontsize=7, loc="lower left")
    for ax in axes[len(tuned) :]:
        ax.axis("off")
    figure.savefig(path, dpi=100)
