"""Procedural 3D objects sampled as surface points with normals and principal curvatures.

Each shape is an implicit function f(x) (negative inside, zero on the surface; exact signed distances where easy)
built from primitives with union/difference. Surface points come from projecting random points onto f = 0 by Newton
steps and voxel-thinning them to an even density. Normals are the normalised gradient; the principal curvatures and
directions are the eigen-pairs of the tangent-projected Hessian divided by |grad f| (finite differences at a
smoothing scale, so box edges read as strongly curved rather than infinite).

Two sets: `DISTINCT` (10 clearly different shapes) and `SIMILAR` (10 solids of revolution that differ only in
their profile). Every object is scaled so that its diameter (largest point distance) is 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Callable

import numpy as np

from frugalnet.frames.observations import curvature_directions_defined, log_curvature, right_handed

SDF = Callable[[np.ndarray], np.ndarray]


# --- primitives (x: (N, 3) -> (N,)) ---------------------------------------------------------------------------------
def sphere(r: float, c=(0, 0, 0)) -> SDF:
    c = np.asarray(c, float)
    return lambda x: np.linalg.norm(x - c, axis=1) - r


def box(half, c=(0, 0, 0), rounding: float = 0.0) -> SDF:
    half, c = np.asarray(half, float) - rounding, np.asarray(c, float)

    def f(x):
        q = np.abs(x - c) - half
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0) - rounding
    return f


def cylinder(r: float, h: float, c=(0, 0, 0)) -> SDF:
    """Capped cylinder along z: radius r, half height h."""
    c = np.asarray(c, float)

    def f(x):
        p = x - c
        d = np.stack([np.hypot(p[:, 0], p[:, 1]) - r, np.abs(p[:, 2]) - h], axis=1)
        return np.minimum(d.max(axis=1), 0) + np.linalg.norm(np.maximum(d, 0), axis=1)
    return f


def capsule(r: float, h: float) -> SDF:
    def f(x):
        p = x.copy()
        p[:, 2] -= np.clip(p[:, 2], -h, h)
        return np.linalg.norm(p, axis=1) - r
    return f


def torus(big: float, small: float, c=(0, 0, 0), plane: str = "xy") -> SDF:
    c = np.asarray(c, float)
    axes = {"xy": (0, 1, 2), "xz": (0, 2, 1)}[plane]

    def f(x):
        p = x - c
        q = np.hypot(p[:, axes[0]], p[:, axes[1]]) - big
        return np.hypot(q, p[:, axes[2]]) - small
    return f


def halfspaces(normals, offsets) -> SDF:
    """Convex polytope {x : n_i . x <= d_i} (zero set exact; distances approximate outside)."""
    n = np.asarray(normals, float)
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    d = np.asarray(offsets, float)
    return lambda x: (x @ n.T - d).max(axis=1)


def _polygon_sdf(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance from 2D points p (N, 2) to a closed polygon with vertices v (V, 2)."""
    a, b = v, np.roll(v, -1, axis=0)
    e = b - a                                                   # (V, 2)
    w = p[:, None, :] - a[None]                                 # (N, V, 2)
    t = np.clip((w * e).sum(-1) / (e * e).sum(-1), 0, 1)
    dist = np.linalg.norm(w - t[..., None] * e, axis=-1).min(axis=1)
    py = p[:, 1:2]
    cond = (a[None, :, 1] <= py) != (b[None, :, 1] <= py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = a[None, :, 0] + (py - a[None, :, 1]) * e[None, :, 0] / e[None, :, 1]
    inside = (cond & (p[:, 0:1] < xint)).sum(axis=1) % 2 == 1
    return np.where(inside, -dist, dist)


def revolution(profile) -> SDF:
    """Solid of revolution about z from a right-half profile [(r, z), ...] running from (0, z_bottom) to (0, z_top)."""
    half = np.asarray(profile, float)
    mirrored = half[-2:0:-1] * np.array([-1.0, 1.0])
    poly = np.concatenate([half, mirrored])

    def f(x):
        return _polygon_sdf(np.stack([np.hypot(x[:, 0], x[:, 1]), x[:, 2]], axis=1), poly)
    return f


def union(*fs: SDF) -> SDF:
    return lambda x: np.min([f(x) for f in fs], axis=0)


def difference(a: SDF, b: SDF) -> SDF:
    return lambda x: np.maximum(a(x), -b(x))


# --- the object sets -----------------------------------------------------------------------------------------------
def _pyramid() -> SDF:
    s, h = 0.45, 0.6
    normals = [(h, 0, s), (-h, 0, s), (0, h, s), (0, -h, s), (0, 0, -1)]
    offsets = [h * s - s * 0.3 + 0.0, h * s - s * 0.3, h * s - s * 0.3, h * s - s * 0.3, 0.3]
    offsets = [o / np.linalg.norm(n) for o, n in zip(offsets[:4], normals[:4])] + [0.3]
    return halfspaces(normals, offsets)


_SHAPES: dict[str, Callable[[], SDF]] = {
    # clearly distinct shapes
    "sphere": lambda: sphere(0.5),
    "cube": lambda: box((0.3, 0.3, 0.3)),
    "cylinder": lambda: cylinder(0.22, 0.4),
    "cone": lambda: revolution([(0, -0.35), (0.35, -0.35), (0, 0.45)]),
    "torus": lambda: torus(0.33, 0.12),
    "capsule": lambda: capsule(0.15, 0.35),
    "mug": lambda: union(difference(cylinder(0.25, 0.3), cylinder(0.21, 0.3, c=(0, 0, 0.06))),
                         torus(0.14, 0.04, c=(0.3, 0, 0), plane="xz")),
    "dumbbell": lambda: union(sphere(0.16, c=(0, 0, 0.34)), sphere(0.16, c=(0, 0, -0.34)), cylinder(0.06, 0.3)),
    "l_block": lambda: union(box((0.35, 0.1, 0.1), c=(0, 0, -0.15)), box((0.1, 0.1, 0.3), c=(-0.25, 0, 0.05))),
    "pyramid": _pyramid,
    # similar shapes: solids of revolution of about the same size
    "rev_cylinder": lambda: revolution([(0, -0.4), (0.25, -0.4), (0.25, 0.4), (0, 0.4)]),
    "rev_frustum": lambda: revolution([(0, -0.4), (0.3, -0.4), (0.18, 0.4), (0, 0.4)]),
    "rev_bullet": lambda: revolution([(0, -0.4), (0.25, -0.4), (0.25, 0.1), (0, 0.45)]),
    "rev_bottle": lambda: revolution([(0, -0.4), (0.25, -0.4), (0.25, 0.1), (0.1, 0.25), (0.1, 0.45), (0, 0.45)]),
    "rev_hourglass": lambda: revolution([(0, -0.4), (0.28, -0.4), (0.15, 0.0), (0.28, 0.4), (0, 0.4)]),
    "rev_barrel": lambda: revolution([(0, -0.4), (0.2, -0.4), (0.3, 0.0), (0.2, 0.4), (0, 0.4)]),
    "rev_spindle": lambda: revolution([(0, -0.45), (0.06, -0.45), (0.3, 0.0), (0.06, 0.45), (0, 0.45)]),
    "rev_stepped": lambda: revolution([(0, -0.4), (0.3, -0.4), (0.3, 0.0), (0.18, 0.0), (0.18, 0.4), (0, 0.4)]),
    "rev_cup": lambda: revolution([(0, -0.4), (0.22, -0.4), (0.22, -0.3), (0.3, 0.4), (0, 0.4)]),
    "rev_chamfered": lambda: revolution([(0, -0.45), (0.14, -0.45), (0.2, -0.39), (0.2, 0.39), (0.14, 0.45),
                                         (0, 0.45)]),
}
DISTINCT = ("sphere", "cube", "cylinder", "cone", "torus", "capsule", "mug", "dumbbell", "l_block", "pyramid")
SIMILAR = ("rev_cylinder", "rev_frustum", "rev_bullet", "rev_bottle", "rev_hourglass", "rev_barrel",
           "rev_spindle", "rev_stepped", "rev_cup", "rev_chamfered")
OBJECT_SETS = {"distinct": DISTINCT, "similar": SIMILAR}


def available_shapes() -> list[str]:
    return sorted(_SHAPES)


def object_set(name: str) -> tuple[str, ...]:
    if name not in OBJECT_SETS:
        raise ValueError(f"object set must be one of {sorted(OBJECT_SETS)}, got {name!r}")
    return OBJECT_SETS[name]


# --- sampling --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SurfaceCloud:
    """A dense surface sample in the object's own frame (diameter 1, centred on the bounding-box centre).

    points (N, 3); pose (N, 3, 3) rows normal, dir1, dir2; curvatures (N, 2) with |k1| >= |k2|; pose_defined (N,).
    """

    name: str
    points: np.ndarray
    pose: np.ndarray
    curvatures: np.ndarray
    pose_defined: np.ndarray
    size: float

    @property
    def normals(self) -> np.ndarray:
        return self.pose[:, 0]

    @cached_property
    def features(self) -> np.ndarray:
        """Log curvatures (N, 2), computed once: the sensors read one row per step (recomputing the whole array
        each time made learning the 77 meshes quadratic, 26 of its 40 CPU s)."""
        return log_curvature(self.curvatures)

    def __len__(self) -> int:
        return len(self.points)


def _gradient(f: SDF, x: np.ndarray, h: float) -> np.ndarray:
    eye = np.eye(3) * h
    return np.stack([(f(x + eye[i]) - f(x - eye[i])) / (2 * h) for i in range(3)], axis=1)


def _hessian(f: SDF, x: np.ndarray, h: float) -> np.ndarray:
    eye = np.eye(3) * h
    f0 = f(x)
    hess = np.empty((len(x), 3, 3))
    for i in range(3):
        hess[:, i, i] = (f(x + eye[i]) - 2 * f0 + f(x - eye[i])) / h**2
        for j in range(i + 1, 3):
            v = (f(x + eye[i] + eye[j]) - f(x + eye[i] - eye[j]) - f(x - eye[i] + eye[j])
                 + f(x - eye[i] - eye[j])) / (4 * h**2)
            hess[:, i, j] = hess[:, j, i] = v
    return hess


def voxel_thin(points: np.ndarray, voxel: float) -> np.ndarray:
    """Indices keeping one point per voxel (the first), so density is even whatever the sampling was."""
    keys = np.floor(points / voxel).astype(np.int64)
    _, idx = np.unique(keys, axis=0, return_index=True)
    return np.sort(idx)


def surface_from_sdf(name: str, f: SDF, spacing: float, seed: int, n_seeds: int | None = None,
                     smoothing: float = 0.02) -> SurfaceCloud:
    """Project random points onto f = 0, thin to `spacing`, and attach normals and principal curvatures."""
    rng = np.random.default_rng(seed)
    n_seeds = n_seeds or int(np.clip(16 / spacing**2, 2000, 60000))
    x = rng.uniform(-0.7, 0.7, (n_seeds, 3))
    for _ in range(8):
        fx = f(x)
        g = np.stack([(f(x + e) - fx) / 1e-6 for e in np.eye(3) * 1e-6], axis=1)
        x = x - (fx / np.maximum((g * g).sum(1), 1e-12))[:, None] * g
    x = x[np.abs(f(x)) < 1e-4]
    x = x[voxel_thin(x + rng.uniform(0, spacing, 3), spacing)]
    centre = (x.max(0) + x.min(0)) / 2
    sub = x[rng.choice(len(x), min(len(x), 1500), replace=False)]
    diam = float(np.max(np.linalg.norm(sub[:, None] - sub[None], axis=-1)))
    scale = 1.0 / diam

    g = _gradient(f, x, 1e-5)
    gnorm = np.linalg.norm(g, axis=1)
    n = g / gnorm[:, None]
    proj = np.eye(3)[None] - n[:, :, None] * n[:, None, :]
    shape_op = proj @ _hessian(f, x, smoothing) @ proj / gnorm[:, None, None]
    vals, vecs = np.linalg.eigh(shape_op)                      # ascending; one eigenvector is ~ the normal
    along_n = np.abs(np.einsum("nij,ni->nj", vecs, n))
    order = np.argsort(along_n, axis=1)[:, :2]                 # the two tangent eigen-pairs
    k = np.take_along_axis(vals, order, axis=1)
    d = np.take_along_axis(vecs, order[:, None, :].repeat(3, axis=1), axis=2)   # (N, 3, 2)
    first = np.argmax(np.abs(k), axis=1)
    k1 = k[np.arange(len(k)), first]
    k2 = k[np.arange(len(k)), 1 - first]
    dir1 = d[np.arange(len(d)), :, first]
    k1, k2 = k1 / scale, k2 / scale                            # curvature scales inversely with size
    pose = right_handed(n, dir1)
    pts = (x - centre) * scale
    return SurfaceCloud(name, pts, pose, np.stack([k1, k2], 1), curvature_directions_defined(k1, k2), 1.0)


@lru_cache(maxsize=64)
def make_object(name: str, spacing: float = 0.02, seed: int = 0) -> SurfaceCloud:
    """Sample shape `name` (see `available_shapes()`) with about `spacing` between points (object diameter 1)."""
    if name not in _SHAPES:
        raise ValueError(f"unknown shape {name!r}; available: {available_shapes()}")
    if not 0.002 <= spacing <= 0.2:
        raise ValueError(f"spacing must be in [0.002, 0.2], got {spacing}")
    return surface_from_sdf(name, _SHAPES[name](), spacing, seed)
