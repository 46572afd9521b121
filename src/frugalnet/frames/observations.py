"""What a sensor patch reports at one step: a location, pose vectors, features and a confidence.

The pose vectors are the rows of a 3x3 matrix: the surface normal and the two principal curvature directions
(right-handed: dir2 = normal x dir1). When the two curvatures are nearly equal (flat or spherical patches) the
curvature directions are undefined and `pose_defined` is False: a learning module then has to try several rotations
about the normal. Features are the signed log principal curvatures (k1 >= k2 in absolute value), optionally followed
by an RGB colour.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def log_curvature(k: np.ndarray, saturation: float = 3.0) -> np.ndarray:
    """Signed log of curvatures, saturating at +-`saturation`: keeps the sign (convex/concave) and compresses the
    range, and every sharp edge (curvature above ~e^3 per diameter) reads the same, as on a real sensor patch."""
    k = np.asarray(k, dtype=float)
    return np.clip(np.sign(k) * np.log1p(np.abs(k)), -saturation, saturation)


def curvature_directions_defined(k1: np.ndarray, k2: np.ndarray, min_ratio: float = 0.3,
                                 min_abs: float = 0.3) -> np.ndarray:
    """True where the principal curvature directions are well defined (curvatures clearly differ)."""
    k1, k2 = np.asarray(k1, float), np.asarray(k2, float)
    diff = np.abs(np.abs(k1) - np.abs(k2))
    return (diff > min_abs) & (diff > min_ratio * np.maximum(np.abs(k1), np.abs(k2)))


def right_handed(normal: np.ndarray, dir1: np.ndarray) -> np.ndarray:
    """Rows [normal, dir1, normal x dir1] with dir1 made orthogonal to the normal; shapes (..., 3) -> (..., 3, 3)."""
    n = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
    d1 = dir1 - np.sum(dir1 * n, axis=-1, keepdims=True) * n
    d1 = d1 / np.maximum(np.linalg.norm(d1, axis=-1, keepdims=True), 1e-12)
    return np.stack([n, d1, np.cross(n, d1)], axis=-2)


@dataclass
class Observation:
    """One sensation in the body (sensor) frame.

    location: (3,) where the patch is; pose: (3, 3) rows normal, dir1, dir2; features: (F,) log curvatures
    [+ colour]; pose_defined: whether dir1/dir2 are meaningful; confidence in [0, 1]; on_object: False when the patch
    sees nothing (empty space).
    """

    location: np.ndarray
    pose: np.ndarray
    features: np.ndarray
    pose_defined: bool = True
    confidence: float = 1.0
    on_object: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.location = np.asarray(self.location, dtype=float).reshape(3)
        self.pose = np.asarray(self.pose, dtype=float).reshape(3, 3)
        self.features = np.asarray(self.features, dtype=float).reshape(-1)
        if not 0.0 <= float(self.confidence) <= 1.0:
            raise ValueError(f"Observation.confidence must be in [0, 1], got {self.confidence}")

    @property
    def normal(self) -> np.ndarray:
        return self.pose[0]
