"""Figures of a continual-learning run: accuracy-matrix heatmaps and accuracy vs number of tasks."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from frugalnet.utils.plotting import pyplot


def heatmaps(matrices: Mapping[str, Sequence[Sequence[float | None]]]):
    """One heatmap of R[i][j] per strategy (rows: after training task i; columns: tested on task j)."""
    names = list(matrices)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    image = None
    for ax, name in zip(axes.flat, names):
        r = np.array([[np.nan if v is None else v for v in row] for row in matrices[name]], dtype=float)
        image = ax.imshow(r, vmin=0.0, vmax=1.0, cmap="viridis", origin="upper")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("tested on task j", fontsize=8)
        ax.set_ylabel("after task i", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="accuracy")
    return fig


def accuracy_vs_tasks(curves: Mapping[str, Sequence[float | None]], joint: float | None = None):
    """Mean accuracy over the tasks learned so far vs how many have been learned; joint training as a marker."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.0))
    for name, curve in curves.items():
        pts = [(i + 1, v) for i, v in enumerate(curve) if v is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=name)
    if joint is not None and curves:
        n = max(len(c) for c in curves.values())
        ax.scatter([n], [joint], marker="*", s=120, color="black", zorder=5, label="joint (upper bound)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("mean accuracy on tasks learned so far")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
