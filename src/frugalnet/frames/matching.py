"""How one sensation matches an object model: pure functions shared by the learning module's first guess, its
per-step scoring and its re-localisation (nothing here holds state).

- `feature_score`: agreement of sensed and stored features in [-1, 1] (a Gaussian of their distance).
- `seed_poses`: the (location, rotation) hypotheses one sensation proposes on one model: every stored point whose
  features agree, with the rotations that carry its pose vectors onto the sensed ones.
- `match`: the score in [-1, 1] of a sensation at given (location, rotation) hypotheses of one model, from the
  stored points near each location (pose agreement, feature agreement, distance penalty; -1 when none is near).
"""
from __future__ import annotations

import numpy as np

from frugalnet.frames.lm_config import LMConfig
from frugalnet.frames.observations import Observation


def about_normal(pose: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Pose frames (N, 3, 3) turned about their normal by each angle -> (N, A, 3, 3)."""
    c, s = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    n, d1, d2 = pose[:, None, 0], pose[:, None, 1], pose[:, None, 2]
    e1, e2 = c * d1 + s * d2, -s * d1 + c * d2
    return np.stack([np.broadcast_to(n, e1.shape), e1, e2], axis=2)


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle of a^T b for rotations a (3, 3) and b (..., 3, 3), in degrees."""
    tr = np.einsum("ij,...ij->...", a, b)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1)))


def feature_score(sensed: np.ndarray, stored: np.ndarray, sigma: float) -> np.ndarray:
    d2 = ((sensed - stored) ** 2).sum(-1)
    return 2 * np.exp(-d2 / (2 * sigma**2)) - 1


def seed_poses(model, obs: Observation, cfg: LMConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(locations (H, 3), rotations (H, 3, 3), feature scores (H,)) proposed by `obs` on `model`: 2 rotations per
    stored point where both curvature directions are defined (their sign is arbitrary), `n_rotations` about the
    normal otherwise; only stored points whose feature score is at least `init_feature_min`."""
    fs = feature_score(obs.features[None], model.features, cfg.feature_sigma)
    ok = fs >= cfg.init_feature_min
    both = ok & model.pose_defined & obs.pose_defined
    one = ok & ~both
    locs, rots, evs = [], [], []
    if both.any():
        r = np.einsum("ji,najk->naik", obs.pose, about_normal(model.pose[both], np.array([0.0, np.pi])))
        locs.append(np.repeat(model.points[both], 2, axis=0))
        rots.append(r.reshape(-1, 3, 3))
        evs.append(np.repeat(fs[both], 2))
    if one.any():
        angles = np.linspace(0, 2 * np.pi, cfg.n_rotations, endpoint=False)
        turned = about_normal(obs.pose[None], angles)[0]                       # (A, 3, 3)
        r = np.einsum("aji,njk->naik", turned, model.pose[one])
        locs.append(np.repeat(model.points[one], len(angles), axis=0))
        rots.append(r.reshape(-1, 3, 3))
        evs.append(np.repeat(fs[one], len(angles)))
    if not locs:
        return np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros(0)
    return np.concatenate(locs), np.concatenate(rots), np.concatenate(evs)


def match(model, loc: np.ndarray, rot: np.ndarray, obs: Observation,
          cfg: LMConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score (H,) in [-1, 1] of `obs` at hypotheses (loc (H, 3), rot (H, 3, 3)) of `model`, the index (H,) of the
    best-matching stored point (len(model) where none is within `radius`), and the sensed normal in each
    hypothesis' frame (H, 3)."""
    n_obj = np.einsum("hji,j->hi", rot, obs.pose[0])
    dist, idx = model.tree.query(loc, k=cfg.neighbours, distance_upper_bound=cfg.radius)
    dist, idx = dist.reshape(len(loc), -1), idx.reshape(len(loc), -1)
    found = np.isfinite(dist)
    pose = model._pose[idx]
    cos_n = np.einsum("hi,hki->hk", n_obj, pose[:, :, 0])
    pose_sim = cos_n
    if obs.pose_defined:
        d_obj = np.einsum("hji,j->hi", rot, obs.pose[1])
        cos_d = np.abs(np.einsum("hi,hki->hk", d_obj, pose[:, :, 1]))
        pose_sim = np.where(model._defined[idx], 0.7 * cos_n + 0.3 * (2 * cos_d - 1), cos_n)
    feat = feature_score(obs.features[None, None], model._features[idx], cfg.feature_sigma)
    if cfg.plane_distance:
        gap = np.abs(np.einsum("hki,hki->hk", loc[:, None] - model._points_pad[idx], pose[:, :, 0]))
        penalty = np.where(found, gap, 0) / cfg.plane_tol
    else:
        penalty = np.where(found, dist, 0) / cfg.radius
    w = cfg.feature_weight
    s = np.where(found, (1 - w) * pose_sim + w * feat - penalty, -np.inf)
    col = s.argmax(axis=1)
    best = s[np.arange(len(loc)), col]
    j = np.where(np.isfinite(best), idx[np.arange(len(loc)), col], len(model))
    return np.where(np.isfinite(best), np.clip(best, -1, 1), -1.0), j, n_obj


class Atlas:
    """All object models in one kd-tree, each moved to its own place (object o at `offsets[o]`, far enough apart
    that no neighbour search crosses from one to another), so one sensation scores every hypothesis of every object
    with one look-up and one set of array operations instead of one per object (77 meshes: the per-object loop was
    most of a step's time). Has what `match` reads of a model; `raw_pad` holds the points unmoved."""

    def __init__(self, models: list, margin: float = 1.0) -> None:
        if not models:
            raise ValueError("an Atlas needs at least one object model")
        lo = np.array([m.points.min(0) for m in models])
        hi = np.array([m.points.max(0) for m in models])
        pitch = float((hi - lo).max()) + 2 * margin
        self.offsets = np.zeros((len(models), 3))
        self.offsets[:, 0] = pitch * np.arange(len(models)) - lo[:, 0]
        self.offsets[:, 1:] = -lo[:, 1:]
        pts = np.concatenate([m.points + self.offsets[o] for o, m in enumerate(models)])
        self.sizes = np.array([len(m) for m in models])
        self.start = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.owner = np.repeat(np.arange(len(models)), self.sizes)
        from scipy.spatial import cKDTree

        self.tree = cKDTree(pts)
        self._pose = np.concatenate([m.pose for m in models] + [np.zeros((1, 3, 3))])
        self._features = np.concatenate([m.features for m in models] + [np.zeros((1, models[0].features.shape[1]))])
        self._defined = np.concatenate([m.pose_defined for m in models] + [[False]])
        self._points_pad = np.concatenate([pts, np.zeros((1, 3))])
        self.raw_pad = np.concatenate([m.points for m in models] + [np.zeros((1, 3))])
        self.keys = tuple(id(m) for m in models)
        self.lo, self.hi, self.margin = lo, hi, margin

    def place(self, obj: np.ndarray, loc: np.ndarray, radius: float) -> np.ndarray:
        """Locations (H, 3) of hypotheses of objects `obj` (H,) moved to their object's place in the atlas. A
        location that drifted off its object is first clipped to the object's box grown by 1.5 `radius` (still no
        stored point within `radius`), so it can never reach another object's points."""
        if 1.5 * radius >= self.margin:
            raise ValueError(f"radius {radius} is too large for the atlas margin {self.margin}")
        return np.clip(loc, self.lo[obj] - 1.5 * radius, self.hi[obj] + 1.5 * radius) + self.offsets[obj]

    def __len__(self) -> int:
        return len(self._points_pad) - 1
