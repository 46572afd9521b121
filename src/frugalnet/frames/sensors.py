"""Sensor patches moving over an object's surface, and the policies that move them.

The simulator knows the object's true pose in the body frame (rotation, translation) and moves the patches over a
dense surface sample in the object's frame. What it hands out is only what a sensor could report in the body frame:
noisy locations, noisy pose vectors, noisy features, and the displacement since the last step. Learning modules never
see the true pose or the object's name.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from frugalnet.frames.objects3d import SurfaceCloud
from frugalnet.frames.observations import Observation


@dataclass(frozen=True)
class SensorNoise:
    """Noise on what a sensor reports: location sd (object diameters), pose vectors sd (degrees), features sd
    (log curvature units)."""

    location: float = 0.005
    pose_deg: float = 2.0
    features: float = 0.1

    def __post_init__(self) -> None:
        for name in ("location", "pose_deg", "features"):
            if getattr(self, name) < 0:
                raise ValueError(f"SensorNoise.{name} must be >= 0, got {getattr(self, name)}")


NO_NOISE = SensorNoise(0.0, 0.0, 0.0)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """n rotation matrices drawn uniformly from SO(3)."""
    return Rotation.random(n, random_state=rng).as_matrix().reshape(n, 3, 3)


def small_rotation(sd_deg: float, rng: np.random.Generator) -> np.ndarray:
    """A rotation about a uniformly random axis by an angle drawn from N(0, sd_deg)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return Rotation.from_rotvec(axis * np.deg2rad(rng.normal(0.0, sd_deg))).as_matrix()


class RandomWalk:
    """Steps of length `step` in a direction that keeps `momentum` of the last one, projected on the surface."""

    name = "random"

    def __init__(self, step: float = 0.05, momentum: float = 0.7) -> None:
        if step <= 0:
            raise ValueError(f"step must be > 0, got {step}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.step, self.momentum = step, momentum

    def direction(self, cloud: SurfaceCloud, i: int, prev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.momentum * prev + (1 - self.momentum) * rng.normal(size=3)

    def next(self, cloud: SurfaceCloud, tree: cKDTree, i: int, prev: np.ndarray,
             rng: np.random.Generator) -> tuple[int, np.ndarray]:
        n = cloud.normals[i]
        d = self.direction(cloud, i, prev, rng)
        d = d - d.dot(n) * n
        norm = np.linalg.norm(d)
        d = d / norm if norm > 1e-9 else np.cross(n, [1.0, 0, 0]) / max(np.linalg.norm(np.cross(n, [1.0, 0, 0])), 1e-9)
        _, j = tree.query(cloud.points[i] + self.step * d)
        if j == i:  # stuck at a rim: jump to a random nearby point
            near = tree.query_ball_point(cloud.points[i], 2 * self.step)
            j = int(rng.choice(near))
        moved = cloud.points[j] - cloud.points[i]
        mnorm = np.linalg.norm(moved)
        return int(j), (moved / mnorm if mnorm > 1e-9 else d)


class CurvatureFollow(RandomWalk):
    """Moves along the principal curvature direction (sign kept from the last step) where it is defined, so the
    sensor traces rims and ridges; elsewhere it walks at random."""

    name = "curvature"

    def direction(self, cloud: SurfaceCloud, i: int, prev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not cloud.pose_defined[i]:
            return super().direction(cloud, i, prev, rng)
        d1 = cloud.pose[i, 1]
        d1 = d1 if d1.dot(prev) >= 0 else -d1
        return d1 + 0.3 * rng.normal(size=3)


POLICIES = {"random": RandomWalk, "curvature": CurvatureFollow}


def make_policy(name: str, step: float = 0.05) -> RandomWalk:
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {name!r}")
    return POLICIES[name](step=step)


_TREES: dict[int, tuple[SurfaceCloud, cKDTree]] = {}


def cloud_tree(cloud: SurfaceCloud) -> cKDTree:
    """A kd-tree over the cloud's points, built once per cloud object."""
    hit = _TREES.get(id(cloud))
    if hit is None or hit[0] is not cloud:
        if len(_TREES) > 128:
            _TREES.clear()
        hit = _TREES[id(cloud)] = (cloud, cKDTree(cloud.points))
    return hit[1]


class SurfaceSensor:
    """A rigid array of patches moving over `cloud` placed in the body frame at (rotation, translation).

    Patch 0 follows the policy; patch k lands on the surface point nearest to patch 0 plus `offsets[k]` (body
    frame), like neighbouring receptive fields of one finger or camera.
    """

    def __init__(self, cloud: SurfaceCloud, rotation: np.ndarray, translation: np.ndarray, policy: RandomWalk,
                 noise: SensorNoise = SensorNoise(), offsets: np.ndarray | None = None,
                 rng: np.random.Generator | None = None, tree: cKDTree | None = None) -> None:
        self.cloud, self.policy, self.noise = cloud, policy, noise
        self.rotation = np.asarray(rotation, float)
        self.translation = np.asarray(translation, float)
        self.offsets = np.zeros((1, 3)) if offsets is None else np.asarray(offsets, float).reshape(-1, 3)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.tree = tree if tree is not None else cloud_tree(cloud)
        self.index = int(self.rng.integers(len(cloud)))
        self.direction = self.rng.normal(size=3)
        self._last: list[np.ndarray] | None = None

    @property
    def n_patches(self) -> int:
        return len(self.offsets)

    def _patch_indices(self) -> np.ndarray:
        base = self.cloud.points[self.index]
        targets = base + self.offsets @ self.rotation  # body offsets into the object frame (R^T o)
        _, idx = self.tree.query(targets)
        idx[0] = self.index
        return idx

    def _observe(self, i: int) -> Observation:
        c, r, nz, rng = self.cloud, self.rotation, self.noise, self.rng
        loc = r @ c.points[i] + self.translation + rng.normal(0, nz.location, 3)
        pose = c.pose[i] @ r.T
        if nz.pose_deg > 0:
            pose = pose @ small_rotation(nz.pose_deg, rng).T
        feats = c.features[i] + rng.normal(0, nz.features, c.features.shape[1])
        return Observation(loc, pose, feats, bool(c.pose_defined[i]))

    def sense(self) -> tuple[list[Observation], list[np.ndarray]]:
        """Observations of every patch and each patch's sensed displacement since the last call (zeros at first)."""
        obs = [self._observe(int(i)) for i in self._patch_indices()]
        locs = [o.location for o in obs]
        disp = [np.zeros(3) for _ in obs] if self._last is None else [a - b for a, b in zip(locs, self._last)]
        self._last = locs
        return obs, disp

    def move(self) -> None:
        self.index, self.direction = self.policy.next(self.cloud, self.tree, self.index, self.direction, self.rng)

    def true_location(self) -> np.ndarray:
        return self.rotation @ self.cloud.points[self.index] + self.translation
