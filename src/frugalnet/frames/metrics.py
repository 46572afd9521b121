"""Pose error and pose refinement: ADD-S (symmetry-aware average distance) and a few ICP steps on sensed points."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def add_s(points: np.ndarray, rot_est: np.ndarray, t_est: np.ndarray, rot_true: np.ndarray,
          t_true: np.ndarray, n_query: int = 500) -> float:
    """Mean distance from model points under the estimated pose to the nearest model point under the true pose.

    Symmetric objects get no penalty for a pose that maps the surface onto itself (ADD-S, Hinterstoisser et al.).
    `n_query` evenly strided points are measured against all points, so the sampling floor is the point spacing."""
    sub = points[:: max(1, len(points) // n_query)]
    a = sub @ np.asarray(rot_est).T + t_est
    b = points @ np.asarray(rot_true).T + t_true
    d, _ = cKDTree(b).query(a)
    return float(d.mean())


def kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation r and translation t minimising |r src + t - dst|^2 over point pairs (N, 3)."""
    cs, cd = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - cs).T @ (dst - cd))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, cd - r @ cs


def refine_pose(tree: cKDTree, model_points: np.ndarray, sensed: np.ndarray, rot: np.ndarray, origin: np.ndarray,
                iterations: int = 5, max_move: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A few ICP steps fitting sensed body-frame points onto the model, starting from (rot, origin).

    Keeps the start when there are too few points or the fit would move the pose by more than `max_move`."""
    sensed = np.asarray(sensed, float)
    if len(sensed) < 6:
        return rot, origin
    r, t = rot, origin
    for _ in range(iterations):
        in_model = (sensed - t) @ r                       # r^T (p - t)
        _, idx = tree.query(in_model)
        r, t = kabsch(model_points[idx], sensed)
    moved = np.linalg.norm((model_points @ r.T + t) - (model_points @ rot.T + origin), axis=1).mean()
    return (r, t) if moved <= max_move else (rot, origin)
