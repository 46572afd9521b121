"""How alike two object shapes are, whatever their poses: for finding near-duplicates in an object set (two meshes
that no sensor could tell apart at the sampling used are a limit of the set, not of the recogniser).

- `shape_distance`: symmetric mean nearest-point distance after aligning one centred cloud onto the other by ICP from
  several random starting rotations (the best start counts); in the clouds' units (object sizes for catalog objects).
- `shape_descriptor`: a cheap rotation-invariant summary (cumulative histogram of point-pair distances and the
  spreads along the principal axes) for choosing which pairs are worth `shape_distance`.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation


def _centred(points: np.ndarray, max_points: int) -> np.ndarray:
    p = np.asarray(points, float)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3:
        raise ValueError(f"points must be an (N >= 3, 3) array, got shape {p.shape}")
    p = p - p.mean(0)
    return p[:: max(1, len(p) // max_points)]


def shape_distance(a: np.ndarray, b: np.ndarray, starts: int = 48, iterations: int = 8, max_points: int = 600,
                   seed: int = 0) -> float:
    """Symmetric mean nearest-point distance between clouds `a` and `b` (N, 3) after the best of `starts` ICP
    alignments of centred `a` onto centred `b` (each from a random rotation, `iterations` rigid updates)."""
    if starts < 1 or iterations < 1:
        raise ValueError(f"starts and iterations must be >= 1, got {starts} and {iterations}")
    a, b = _centred(a, max_points), _centred(b, max_points)
    tb = cKDTree(b)
    best = np.inf
    for r in Rotation.random(starts, random_state=seed).as_matrix():
        x = a @ r.T
        for _ in range(iterations):
            y = b[tb.query(x)[1]]
            mx, my = x.mean(0), y.mean(0)
            u, _, vt = np.linalg.svd((x - mx).T @ (y - my))
            fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])       # a rotation, never a reflection
            x = (x - mx) @ (vt.T @ fix @ u.T).T + my
        best = min(best, 0.5 * (tb.query(x)[0].mean() + cKDTree(x).query(b)[0].mean()))
    return float(best)


def shape_descriptor(points: np.ndarray, pairs: int = 20000, bins: int = 32, reach: float = 1.2,
                     seed: int = 0) -> np.ndarray:
    """Rotation-invariant summary: the cumulative histogram of `pairs` random point-pair distances (in [0, reach])
    and 5 x the square roots of the covariance eigenvalues (spreads along the principal axes, smallest first)."""
    p = _centred(points, len(points))
    i, j = np.random.default_rng(seed).integers(0, len(p), (2, pairs))
    h = np.histogram(np.linalg.norm(p[i] - p[j], axis=1), bins=bins, range=(0, reach))[0] / pairs
    return np.concatenate([np.cumsum(h), 5 * np.sqrt(np.maximum(np.linalg.eigvalsh(np.cov(p.T)), 0))])


def near_duplicates(clouds: dict[str, np.ndarray], candidates: int = 40, starts: int = 24,
                    seed: int = 0) -> list[tuple[float, str, str]]:
    """The `candidates` pairs of `clouds` (name -> points) closest by `shape_descriptor`, each with its
    `shape_distance`, closest first."""
    names = list(clouds)
    if len(names) < 2:
        return []
    d = np.stack([shape_descriptor(clouds[n], seed=seed) for n in names])
    dd = np.linalg.norm(d[:, None] - d[None], axis=2)
    iu = np.triu_indices(len(names), 1)
    order = np.argsort(dd[iu], kind="stable")[:candidates]
    out = [(shape_distance(clouds[names[iu[0][k]]], clouds[names[iu[1][k]]], starts, seed=seed),
            names[iu[0][k]], names[iu[1][k]]) for k in order]
    return sorted(out)


def distinct_draw(order, need: int, cloud, margin: float = 1.25, starts: int = 24, seed: int = 0,
                  progress=None) -> tuple[list[str], list[tuple[str, str, float, float]], dict[str, float]]:
    """Greedy draw of `need` mutually distinct shapes from the candidate names `order`, taken in that order.

    `cloud(name, k)` gives sample k (0 or 1) of a shape's surface points, two independent samplings. A shape's own
    resampling noise is `shape_distance` between its two samples; a candidate is skipped when its distance to an
    already chosen shape is below `margin` times the larger of the two shapes' noise (closer than two samplings of
    one shape: no sensor could tell them apart). Returns (chosen names, skipped as (name, chosen twin, distance,
    threshold), each considered shape's noise)."""
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    chosen: list[str] = []
    skipped: list[tuple[str, str, float, float]] = []
    noise: dict[str, float] = {}
    for name in order:
        if len(chosen) == need:
            break
        a = cloud(name, 0)
        noise[name] = shape_distance(a, cloud(name, 1), starts, seed=seed)
        twin = None
        for other in chosen:
            thr = margin * max(noise[name], noise[other])
            d = shape_distance(a, cloud(other, 0), starts, seed=seed)
            if d < thr:
                twin = (name, other, d, thr)
                break
        if twin is None:
            chosen.append(name)
        else:
            skipped.append(twin)
        if progress is not None:
            progress(len(chosen), twin)
    if len(chosen) < need:
        raise ValueError(f"only {len(chosen)} of {len(list(order))} candidates are mutually distinct; {need} needed")
    return chosen, skipped, noise
