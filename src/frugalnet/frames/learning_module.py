"""An evidence-based learning module: object models as graphs of features at locations, recognition as evidence
over (object, location, rotation) hypotheses.

Learning: the observations of one exposure (body-frame locations, pose vectors, features) are voxel-thinned into a
model held in a kd-tree; the model's frame is the body frame at learning time.

Recognition: the first sensation proposes, for every stored point, the rotations that carry the stored pose vectors
onto the sensed ones (2 when curvature directions are defined, because their sign is arbitrary; `n_rotations`
about the normal otherwise). Each later sensation moves every hypothesis by the sensed body displacement rotated
into the hypothesis' object frame, then scores it against the stored points near its new location: agreeing normals
and curvature directions and matching features raise evidence, mismatch lowers it, and a location with no stored
point nearby (empty space) costs -1; the distance penalty is to the stored point itself or (`plane_distance`) to
its tangent plane, which does not punish a correct pose that falls between two stored points. Hypotheses far behind
the leader are pruned (each object may keep its best `keep_per_object`, and a share `object_quota` of the cap at
the first sensation, so that one noisy sensation or a bad streak cannot drop the true object for good). The module
stops when one object leads the next by `x_percent` of its evidence and its leading poses agree (or the object has
led for `symmetry_steps` steps without them agreeing: a symmetric object).

Every object is scored in one look-up (`matching.Atlas`). An object whose best pose keeps scoring badly is
re-localised (`_relocalise`): new poses from this sensation that explain the last few, keeping the object's evidence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from frugalnet.frames.lm_config import PRESETS, LMConfig, lm_preset
from frugalnet.frames.matching import Atlas, match, rotation_angle_deg, seed_poses
from frugalnet.frames.objects3d import voxel_thin
from frugalnet.frames.observations import Observation

__all__ = ["EvidenceLM", "LMConfig", "ObjectModel", "PRESETS", "lm_preset", "rotation_angle_deg"]


@dataclass
class ObjectModel:
    """Features at locations: points (N, 3), pose (N, 3, 3) rows normal/dir1/dir2, features (N, F), pose_defined."""

    name: str
    points: np.ndarray
    pose: np.ndarray
    features: np.ndarray
    pose_defined: np.ndarray

    def __post_init__(self) -> None:
        if len(self.points) == 0:
            raise ValueError(f"object model {self.name!r} has no points")
        self.tree = cKDTree(self.points)
        # a sentinel row so that "no neighbour" (index N from cKDTree) can be gathered without masking
        self._pose = np.concatenate([self.pose, np.zeros((1, 3, 3))])
        self._features = np.concatenate([self.features, np.zeros((1, self.features.shape[1]))])
        self._defined = np.concatenate([self.pose_defined, [False]])
        self._points_pad = np.concatenate([self.points, np.zeros((1, 3))])

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def learn(cls, name: str, observations: list[Observation], voxel: float) -> "ObjectModel":
        """Build a model from one exposure's observations, keeping one observation per voxel."""
        if not observations:
            raise ValueError("cannot learn an object from zero observations")
        loc = np.stack([o.location for o in observations])
        keep = voxel_thin(loc, voxel)
        return cls(name, loc[keep], np.stack([observations[i].pose for i in keep]),
                   np.stack([observations[i].features for i in keep]),
                   np.array([observations[i].pose_defined for i in keep]))

    def merge(self, other: "ObjectModel", voxel: float) -> "ObjectModel":
        """This model extended by points of `other` (already in this model's frame) that fill empty voxels."""
        d, _ = self.tree.query(other.points)
        new = d > voxel * 0.75
        return ObjectModel(self.name, np.concatenate([self.points, other.points[new]]),
                           np.concatenate([self.pose, other.pose[new]]),
                           np.concatenate([self.features, other.features[new]]),
                           np.concatenate([self.pose_defined, other.pose_defined[new]]))


class EvidenceLM:
    """One column: evidence for (object, location, rotation) hypotheses, updated sensation by sensation."""

    def __init__(self, models: list[ObjectModel] | None = None, config: LMConfig | None = None) -> None:
        self.config = config or LMConfig()
        self.config.validate()
        self.models: list[ObjectModel] = list(models or [])
        self.reset()

    # --- learning ---------------------------------------------------------------------------------------------
    def add_model(self, model: ObjectModel) -> int:
        self.models.append(model)
        return len(self.models) - 1

    def learn(self, name: str, observations: list[Observation]) -> int:
        return self.add_model(ObjectModel.learn(name, observations, self.config.voxel))

    # --- recognition ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.steps = 0
        self.obj = np.zeros(0, np.int64)
        self.loc = np.zeros((0, 3))
        self.rot = np.zeros((0, 3, 3))
        self.ev = np.zeros(0)
        self.born = np.zeros(0, np.int64)     # step each hypothesis was proposed at (re-seeded ones get a grace)
        self.sensed: list[np.ndarray] = []
        self.history: list[np.ndarray] = []   # best evidence per object after each step
        self.hypotheses: list[int] = []       # hypotheses alive after each step (pruning at work)
        self.reseeded: list[int] = []         # objects re-localised at each step
        self._lead_steps = 0
        self._recent: list[Observation] = []  # the last reseed_window + 1 sensations
        self._lost = np.zeros(len(self.models), np.int64)

    def _initialise(self, obs: Observation) -> None:
        objs, locs, rots, evs = [], [], [], []
        for o, m in enumerate(self.models):
            loc, rot, fs = seed_poses(m, obs, self.config)
            objs.append(np.full(len(loc), o))
            locs.append(loc)
            rots.append(rot)
            evs.append(fs)
        if objs:
            self.obj, self.loc = np.concatenate(objs), np.concatenate(locs)
            self.rot, self.ev = np.concatenate(rots), np.concatenate(evs)
            self.born = np.zeros(len(self.ev), np.int64)
        self._prune()

    def _score(self, obs: Observation) -> np.ndarray:
        """Evidence of this sensation for every hypothesis, in [-1, 1] (times the sensation's confidence): every
        object at once in the `Atlas`; then sensory anchoring."""
        cfg = self.config
        at = self._atlas()
        score, j, n_obj = match(at, at.place(self.obj, self.loc, cfg.radius), self.rot, obs, cfg)
        if cfg.anchor > 0:
            ok = j < len(at)
            every = np.arange(len(self.ev))
            self._anchor(every, n_obj, at._pose[j, 0], at.raw_pad[j], ok)
            if cfg.anchor_dir > 0 and obs.pose_defined:
                self._anchor_dir(every, obs.pose[1], at._pose[j], ok & at._defined[j])
        if cfg.score_floor > -1:
            score = np.maximum(score, cfg.score_floor)
        return score * obs.confidence

    def _atlas(self) -> Atlas:
        """The models in one kd-tree, rebuilt when the list of models changed."""
        if self.__dict__.get("_atlas_cache") is None or self._atlas_cache.keys != tuple(id(m) for m in self.models):
            self._atlas_cache = Atlas(self.models)
        return self._atlas_cache

    def _relocalise(self, obs: Observation, score: np.ndarray) -> int:
        """Re-localisation: an object whose best pose scored below `reseed_below` for `reseed_after` sensations in
        a row has lost track (a rotation error grown into a location error, or no good pose from the first
        sensation). Its poses are proposed afresh from this sensation (`seed_poses`) and kept if they also explain
        the last `reseed_window` sensations (mean score >= `reseed_min`, checked most recent first so that most
        proposals are dropped after one look-up); the best `reseed_max` replace the object's lost poses and start
        at its best evidence less `reseed_cost`, so the evidence the object gathered is kept, not its pose.
        Returns how many objects were re-localised."""
        cfg = self.config
        if len(self._lost) != len(self.models):
            self._lost = np.zeros(len(self.models), np.int64)
        step_best = np.full(len(self.models), np.inf)
        step_best[np.unique(self.obj)] = -np.inf
        np.maximum.at(step_best, self.obj, score)
        self._lost = np.where(step_best < cfg.reseed_below, self._lost + 1, 0)
        evidence = self.object_evidence()
        due = np.flatnonzero((self._lost >= cfg.reseed_after) & (evidence >= evidence.max() - cfg.reseed_span))
        if 0 < cfg.reseed_objects < len(due):           # the longest lost first; the others wait their turn
            due = due[np.lexsort((-evidence[due], -self._lost[due]))[: cfg.reseed_objects]]
        past = self._recent[-2::-1]
        if len(due) == 0 or not past:
            return 0
        drop, objs, locs, rots, evs = [], [], [], [], []
        for o in due:
            self._lost[o] = 0
            m = self.models[o]
            loc, rot, _ = seed_poses(m, obs, cfg)
            total = np.zeros(len(loc))
            for k, ob in enumerate(past if len(loc) else (), 1):
                there = loc + np.einsum("hji,j->hi", rot, ob.location - obs.location)
                if k == 1:                   # most proposals land off the surface: one cheap look-up drops them
                    near = np.isfinite(m.tree.query(there, distance_upper_bound=cfg.radius)[0])
                    loc, rot, total, there = loc[near], rot[near], total[near], there[near]
                    if len(loc) == 0:
                        break
                s_k, _, _ = match(m, there, rot, ob, cfg)
                total = total + s_k
                keep = total >= k * cfg.reseed_min - 1.0
                loc, rot, total = loc[keep], rot[keep], total[keep]
                if len(loc) == 0:
                    break
            good = np.flatnonzero(total >= len(past) * cfg.reseed_min)
            if len(good) == 0:
                continue
            good = good[np.argsort(total[good], kind="stable")[::-1][: cfg.reseed_max]]
            drop.append(np.flatnonzero((self.obj == o) & (score < cfg.reseed_below)))
            objs.append(np.full(len(good), o))
            locs.append(loc[good])
            rots.append(rot[good])
            evs.append(np.full(len(good), evidence[o] - cfg.reseed_cost))
        if not objs:
            return 0
        keep = np.setdiff1d(np.arange(len(self.ev)), np.concatenate(drop))
        self.obj = np.concatenate([self.obj[keep]] + objs)
        self.loc = np.concatenate([self.loc[keep]] + locs)
        self.rot = np.concatenate([self.rot[keep]] + rots)
        self.ev = np.concatenate([self.ev[keep]] + evs)
        self.born = np.concatenate([self.born[keep], np.full(len(self.ev) - len(keep), self.steps)])
        return len(objs)

    def _anchor(self, sel: np.ndarray, n_sensed: np.ndarray, n_stored: np.ndarray, p_stored: np.ndarray,
                ok: np.ndarray) -> None:
        """Sensory anchoring: turn each hypothesis a fraction `anchor` of the way that carries its view of the
        sensed normal onto the best-matching stored normal, and pull it onto the surface along that normal, so
        that small rotation errors do not grow into location errors along the path (scores are taken before)."""
        cfg = self.config
        axis = np.cross(n_sensed, n_stored)
        sin = np.linalg.norm(axis, axis=1)
        angle = np.arctan2(sin, (n_sensed * n_stored).sum(1))
        ok = ok & (angle < np.deg2rad(cfg.anchor_max_deg)) & (sin > 1e-9)
        if not ok.any():
            return
        rotvec = axis[ok] / sin[ok, None] * (cfg.anchor * angle[ok])[:, None]
        q = Rotation.from_rotvec(rotvec).as_matrix()                            # q n_sensed ~ n_stored
        h = sel[ok]
        self.rot[h] = np.einsum("hij,hkj->hik", self.rot[h], q)                 # R q^T
        gap = ((p_stored[ok] - self.loc[h]) * n_stored[ok]).sum(1)
        self.loc[h] = self.loc[h] + cfg.anchor * gap[:, None] * n_stored[ok]

    def _anchor_dir(self, sel: np.ndarray, d_body: np.ndarray, stored: np.ndarray, ok: np.ndarray) -> None:
        """Anchoring about the normal: turn each hypothesis a fraction `anchor_dir` of the angle (mod 180 degrees,
        the sign of a curvature direction is arbitrary) between the sensed first curvature direction and the best
        stored point's, about the stored normal. The first sensation tries `n_rotations` angles about the normal
        where directions are undefined; without this, their spacing stays an error that grows into a location
        error along the path."""
        cfg = self.config
        if not ok.any():
            return
        h, n, s = sel[ok], stored[ok, 0], stored[ok, 1]
        u = np.einsum("hji,j->hi", self.rot[h], d_body)                          # sensed direction, object frame
        u = u - (u * n).sum(1, keepdims=True) * n
        phi = np.arctan2((np.cross(u, s) * n).sum(1), (u * s).sum(1))           # turns u onto s about n
        phi = (phi + np.pi / 2) % np.pi - np.pi / 2
        small = (np.abs(phi) < np.deg2rad(cfg.anchor_max_deg)) & (np.linalg.norm(u, axis=1) > 0.3)
        if not small.any():
            return
        q = Rotation.from_rotvec(n[small] * (cfg.anchor_dir * phi[small])[:, None]).as_matrix()
        self.rot[h[small]] = np.einsum("hij,hkj->hik", self.rot[h[small]], q)

    def _prune(self) -> None:
        if len(self.ev) == 0:
            return
        cfg = self.config
        best = self.ev.max()
        ok = self.ev >= best - cfg.prune_margin - cfg.prune_frac * max(best, 0)
        if cfg.keep_per_object > 0 and not ok.all():
            ok |= self._object_rank(np.arange(len(self.ev))) < cfg.keep_per_object
        if cfg.reseed_after > 0:                # re-seeded poses get reseed_window steps to sort themselves out
            ok |= (self.born > 0) & (self.born >= self.steps - cfg.reseed_window)
        keep = np.flatnonzero(ok)
        if len(keep) > cfg.max_hypotheses:
            keep = self._cap(keep)
        self.obj, self.loc, self.rot, self.ev = self.obj[keep], self.loc[keep], self.rot[keep], self.ev[keep]
        self.born = self.born[keep]

    def _object_rank(self, idx: np.ndarray) -> np.ndarray:
        """Rank of each hypothesis in `idx` among those of its object in `idx` (0: the object's best)."""
        order = np.lexsort((-self.ev[idx], self.obj[idx]))
        obj = self.obj[idx][order]
        rank = np.empty(len(idx), np.int64)
        rank[order] = np.arange(len(idx)) - np.searchsorted(obj, obj)
        return rank

    def _cap(self, keep: np.ndarray) -> np.ndarray:
        """The `max_hypotheses` best of `keep`; with `object_quota`, each object first keeps its best
        quota * max_hypotheses / objects, so that a noisy first sensation cannot drop an object altogether."""
        cfg = self.config
        order = keep[np.argsort(self.ev[keep], kind="stable")[::-1]]
        if cfg.object_quota <= 0:
            return order[:cfg.max_hypotheses]
        quota = int(cfg.object_quota * cfg.max_hypotheses / max(len(self.models), 1))
        sure = self._object_rank(order) < quota
        rest = np.flatnonzero(~sure)[: max(cfg.max_hypotheses - int(sure.sum()), 0)]
        return order[np.concatenate([np.flatnonzero(sure), rest])]

    def step(self, obs: Observation, displacement: np.ndarray) -> None:
        """Take in one sensation and the body-frame displacement that led to it."""
        self.sensed.append(obs.location.copy())
        self._recent = (self._recent + [obs])[-(self.config.reseed_window + 1):]
        n_reseeded = 0
        if self.steps == 0:
            self._initialise(obs)
        elif len(self.ev):
            self.loc = self.loc + np.einsum("hji,j->hi", self.rot, np.asarray(displacement, float))
            score = self._score(obs)
            self.ev = self.ev + score
            if self.config.reseed_after > 0:
                n_reseeded = self._relocalise(obs, score)
            self._prune()
        self.reseeded.append(n_reseeded)
        self.steps += 1
        self.history.append(self.object_evidence())
        self.hypotheses.append(len(self.ev))

    # --- voting -----------------------------------------------------------------------------------------------
    def votes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The leading hypotheses of every object still in the running (best evidence within the prune window of
        the leader; not those kept only by `keep_per_object`): (obj, location, rotation) to send to other columns."""
        cfg = self.config
        if len(self.ev) == 0:
            return self.obj, self.loc, self.rot
        ev, best = self.object_evidence(), self.ev.max()
        running = ev >= best - cfg.prune_margin - cfg.prune_frac * max(best, 0)
        sel = np.flatnonzero(running[self.obj] & (self.ev >= ev[self.obj] - cfg.vote_margin))
        sel = sel[self._object_rank(sel) < cfg.vote_max]
        return self.obj[sel], self.loc[sel], self.rot[sel]

    def receive_votes(self, obj: np.ndarray, loc: np.ndarray, rot: np.ndarray, share: float = 1.0,
                      sender: np.ndarray | None = None) -> None:
        """Raise hypotheses that a vote supports: same object, location within `radius`, rotation within the pose
        tolerance. `loc` must already be moved to this column's sensor (sender location + R^T offset). With
        `sender` (one id per vote), votes of several columns come in one call and a hypothesis gets `share` for
        each column that supports it (as one call per column would), with one look-up instead of one per column."""
        cfg = self.config
        if len(self.ev) == 0 or len(obj) == 0:
            return
        sender = np.zeros(len(obj), np.int64) if sender is None else np.asarray(sender)
        ids = np.unique(sender)
        cos_tol = np.cos(np.deg2rad(cfg.pose_tolerance_deg * 1.5))
        at = self._atlas()                               # objects placed apart: one look-up for all of them
        dist, idx = cKDTree(at.place(obj, loc, cfg.radius)).query(at.place(self.obj, self.loc, cfg.radius),
                                                                  k=min(8 * len(ids), len(obj)),
                                                                  distance_upper_bound=cfg.radius)
        dist, idx = dist.reshape(len(self.ev), -1), idx.reshape(len(self.ev), -1)
        vrot = np.concatenate([rot, np.zeros((1, 3, 3))])[idx]                   # (h, k, 3, 3)
        tr = np.einsum("hij,hkij->hk", self.rot, vrot)
        agree = np.isfinite(dist) & ((tr - 1) / 2 >= cos_tol)
        who = np.concatenate([sender, [-1]])[idx]
        support = sum((agree & (who == i)).any(axis=1) for i in ids)
        self.ev = self.ev + cfg.vote_weight * share * support

    # --- read-out ---------------------------------------------------------------------------------------------
    def object_evidence(self) -> np.ndarray:
        """Best evidence per known object (-inf where every hypothesis was pruned)."""
        out = np.full(len(self.models), -np.inf)
        if len(self.ev):
            np.maximum.at(out, self.obj, self.ev)
        return out

    def best(self) -> tuple[int, np.ndarray, np.ndarray, float]:
        """(object index, rotation, object origin in the body frame, evidence) of the leading hypothesis;
        object -1 when there is none."""
        if len(self.ev) == 0:
            return -1, np.eye(3), np.zeros(3), -np.inf
        h = int(np.argmax(self.ev))
        origin = self.sensed[-1] - self.rot[h] @ self.loc[h]
        return int(self.obj[h]), self.rot[h], origin, float(self.ev[h])

    def decided(self) -> bool:
        """True when one object leads clearly and its pose is settled (or it is symmetric). Updates the count of
        steps the current leader has led, so call it once per step."""
        cfg = self.config
        ev = self.object_evidence()
        if self.steps < cfg.min_steps or len(ev) == 0 or not np.isfinite(ev).any():
            self._lead_steps = 0
            return False
        order = np.argsort(ev)[::-1]
        e1 = ev[order[0]]
        e2 = ev[order[1]] if len(ev) > 1 else -np.inf
        if not e1 - e2 > max(cfg.x_percent * max(abs(e1), 1.0), cfg.min_lead, cfg.lead_per_step * self.steps):
            self._lead_steps = 0
            return False
        self._lead_steps += 1
        if self._lead_steps < cfg.min_lead_steps:
            return False
        return self._pose_settled(int(order[0]), e1) or self._lead_steps >= cfg.symmetry_steps

    def _pose_settled(self, o: int, e1: float) -> bool:
        """Whether the leading poses of object `o` put its surface in the same place (ADD-S below tolerance), so
        poses that differ only by a symmetry of the object count as the same."""
        cfg = self.config
        sel = np.flatnonzero((self.obj == o) & (self.ev >= e1 - cfg.x_percent * max(abs(e1), 1.0)))
        sel = sel[np.argsort(self.ev[sel])[::-1]]
        sel = sel[np.linspace(0, len(sel) - 1, min(len(sel), 32)).astype(int)]
        m = self.models[o]
        pts = m.points[:: max(1, len(m) // 200)]
        origins = self.sensed[-1] - np.einsum("hij,hj->hi", self.rot[sel], self.loc[sel])
        body = np.einsum("hij,nj->hni", self.rot[sel], pts) + origins[:, None]       # each pose's surface
        back = np.einsum("hni,ij->hnj", body - origins[0], self.rot[sel[0]])          # into the best's frame
        d, _ = m.tree.query(back.reshape(-1, 3))
        return bool(d.reshape(len(sel), -1).mean(axis=1).max() <= cfg.pose_tolerance)

    def no_match(self) -> bool:
        """True when, after `min_steps`, no hypothesis has gathered `new_object_score` evidence per step."""
        if not self.models:
            return True
        ev = self.object_evidence()
        return self.steps >= self.config.min_steps and (
            not np.isfinite(ev).any() or ev.max() < self.config.new_object_score * self.steps)
