"""Baselines on exactly the sensed points a learning module got: a small PointNet and D2 shape distributions.

Both are trained on walks over each object at its single learning pose (the same one exposure the learning module
had) and tested on the body-frame locations the sensor reported in each recognition episode.

- `PointNetClassifier`: shared per-point MLP, max-pool, MLP head (Qi et al. 2017, small), on centred locations;
  optionally trained with random rotations (augmentation).
- `D2Classifier`: histogram of distances between pairs of sensed points (Osada et al. 2002), which no rotation
  changes, with a nearest-neighbour rule.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from frugalnet.frames.objects3d import SurfaceCloud
from frugalnet.frames.sensors import SensorNoise, SurfaceSensor, make_policy, random_rotations


def training_walks(clouds: list[SurfaceCloud], walks_per_object: int, min_len: int, max_len: int,
                   noise: SensorNoise, seed: int, policy: str = "random", step: float = 0.05, views: int = 1):
    """Point sets sensed by walks over each object: (list of (n_i, 3) arrays, labels).

    views=1: every walk at the identity pose (the one exposure the learning module had). views=V > 1: each object
    is shown at V random rotations (the first the identity) with `walks_per_object` walks at each."""
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    rng = np.random.default_rng(seed)
    sets, labels = [], []
    for label, cloud in enumerate(clouds):
        rots = np.concatenate([np.eye(3)[None], random_rotations(views - 1, rng)]) if views > 1 else np.eye(3)[None]
        for rot in rots:
            for _ in range(walks_per_object):
                sensor = SurfaceSensor(cloud, rot, np.zeros(3), make_policy(policy, step), noise, None, rng)
                pts = []
                for _ in range(int(rng.integers(min_len, max_len + 1))):
                    pts.append(sensor.sense()[0][0].location)
                    sensor.move()
                sets.append(np.stack(pts))
                labels.append(label)
    return sets, np.array(labels)


def _pad(sets: list[np.ndarray], n: int) -> np.ndarray:
    """Centre each set and repeat points cyclically to n (max-pooling is unchanged by repeats)."""
    out = np.empty((len(sets), n, 3), np.float32)
    for i, s in enumerate(sets):
        s = s - s.mean(0)
        out[i] = s[np.arange(n) % len(s)] if len(s) <= n else s[np.linspace(0, len(s) - 1, n).astype(int)]
    return out


class PointNet(nn.Module):
    """x (B, N, 3) -> logits (B, classes)."""

    def __init__(self, classes: int, width: int = 64) -> None:
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2 * width), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.point(x).max(dim=1).values)


class PointNetClassifier:
    def __init__(self, classes: int, augment: bool, epochs: int = 30, n_points: int = 64, seed: int = 0) -> None:
        self.classes, self.augment, self.epochs, self.n_points, self.seed = classes, augment, epochs, n_points, seed

    def fit(self, sets: list[np.ndarray], labels: np.ndarray) -> "PointNetClassifier":
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.model = PointNet(self.classes)
        opt = torch.optim.Adam(self.model.parameters(), lr=3e-3)
        x = _pad(sets, self.n_points)
        y = torch.as_tensor(labels)
        for _ in range(self.epochs):
            xe = x
            if self.augment:
                xe = np.einsum("bij,bnj->bni", random_rotations(len(x), rng), x).astype(np.float32)
            perm = rng.permutation(len(x))
            for i in range(0, len(x), 64):
                b = perm[i:i + 64]
                loss = nn.functional.cross_entropy(self.model(torch.as_tensor(xe[b])), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    @torch.no_grad()
    def predict(self, sets: list[np.ndarray]) -> np.ndarray:
        self.model.eval()
        return self.model(torch.as_tensor(_pad(sets, self.n_points))).argmax(1).numpy()


def d2_histogram(points: np.ndarray, bins: int = 16, max_dist: float = 1.0) -> np.ndarray:
    """Normalised histogram of the distances between all pairs of points."""
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)[np.triu_indices(len(points), 1)]
    h, _ = np.histogram(np.clip(d, 0, max_dist - 1e-9), bins=bins, range=(0, max_dist))
    return h / max(h.sum(), 1)


class D2Classifier:
    def __init__(self, bins: int = 16) -> None:
        self.bins = bins

    def fit(self, sets: list[np.ndarray], labels: np.ndarray) -> "D2Classifier":
        self.templates = np.stack([d2_histogram(s, self.bins) for s in sets])
        self.labels = labels
        return self

    def predict(self, sets: list[np.ndarray]) -> np.ndarray:
        h = np.stack([d2_histogram(s, self.bins) for s in sets])
        return self.labels[np.abs(h[:, None] - self.templates[None]).sum(-1).argmin(1)]
