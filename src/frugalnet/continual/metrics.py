"""Continual-learning metrics from the accuracy matrix R, where R[i][j] is the accuracy on task j after training
task i (None where not measured, e.g. j > i). Pure functions of nested lists.

- average accuracy (Lopez-Paz & Ranzato 2017): mean_j R[T-1][j], over all tasks after the last one.
- backward transfer, BWT (Lopez-Paz & Ranzato 2017): mean_{j<T-1} (R[T-1][j] - R[j][j]); negative = forgetting.
- forgetting (Chaudhry et al. 2018): mean_{j<T-1} (max_{j<=i<T-1} R[i][j] - R[T-1][j]).
- accuracy after each task: mean_{j<=i} R[i][j], the curve of accuracy vs number of tasks learned.

Long runs may measure full rows only every few tasks: the diagonal and the last row are required, other entries may
be None (forgetting then takes its max over the measured ones, and the curve is None at incomplete rows).
"""
from __future__ import annotations

from typing import Sequence

Matrix = Sequence[Sequence[float | None]]


def _check(r: Matrix) -> int:
    t = len(r)
    if t == 0 or any(len(row) != t for row in r):
        raise ValueError(f"accuracy matrix must be square and non-empty, got {t} rows of lengths "
                         f"{[len(row) for row in r]}")
    for i in range(t):
        if r[i][i] is None:
            raise ValueError(f"accuracy matrix diagonal entry R[{i}][{i}] is missing")
    for j in range(t):
        if r[t - 1][j] is None:
            raise ValueError(f"accuracy matrix last-row entry R[{t - 1}][{j}] is missing")
    return t


def average_accuracy(r: Matrix) -> float:
    t = _check(r)
    return sum(r[t - 1]) / t  # type: ignore[arg-type]


def backward_transfer(r: Matrix) -> float:
    t = _check(r)
    if t == 1:
        return 0.0
    return sum(r[t - 1][j] - r[j][j] for j in range(t - 1)) / (t - 1)  # type: ignore[operator]


def forgetting(r: Matrix) -> float:
    t = _check(r)
    if t == 1:
        return 0.0
    peaks = [max(r[i][j] for i in range(j, t - 1) if r[i][j] is not None) for j in range(t - 1)]  # type: ignore
    return sum(peaks[j] - r[t - 1][j] for j in range(t - 1)) / (t - 1)  # type: ignore[operator]


def accuracy_curve(r: Matrix) -> list[float | None]:
    """Mean accuracy over the tasks learned so far, after each task (None where that row was not fully measured)."""
    t = _check(r)
    rows = [r[i][: i + 1] for i in range(t)]
    return [None if any(v is None for v in row) else sum(row) / len(row) for row in rows]  # type: ignore


def summarize(r: Matrix) -> dict:
    return {"average_accuracy": average_accuracy(r), "forgetting": forgetting(r),
            "backward_transfer": backward_transfer(r), "curve": accuracy_curve(r)}


def empty_matrix(t: int) -> list[list[float | None]]:
    return [[None] * t for _ in range(t)]

