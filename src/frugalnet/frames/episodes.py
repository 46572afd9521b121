"""Learning and recognition episodes: one exposure to learn an object, a moving sensor to recognise it.

`learn_models` sweeps a sensor over every point of a surface sample of each object at the identity pose (one
exposure, one pose) and keeps the voxel-thinned graph. `run_episode` places a different surface sample of the object
at a given pose, lets the sensor array move until the columns decide (or `max_steps`), and scores the answer. Only
the simulator sees the true pose; the columns get observations and displacements.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from frugalnet.frames.learning_module import EvidenceLM, LMConfig, ObjectModel
from frugalnet.frames.metrics import add_s, refine_pose
from frugalnet.frames.catalog import make_object
from frugalnet.frames.objects3d import SurfaceCloud
from frugalnet.frames.observations import Observation
from frugalnet.frames.sensors import NO_NOISE, SensorNoise, SurfaceSensor, make_policy, small_rotation
from frugalnet.frames.voting import ColumnEnsemble


@dataclass
class EpisodeConfig:
    max_steps: int = 80
    policy: str = "random"
    step: float = 0.05
    noise: SensorNoise = field(default_factory=SensorNoise)
    patch_spacing: float = 0.06    # distance between neighbouring patches (body frame)
    refine: bool = True            # ICP on the sensed points once decided
    min_lms_match: int = 1


def sweep_observations(cloud: SurfaceCloud, noise: SensorNoise = NO_NOISE,
                       rng: np.random.Generator | None = None) -> list[Observation]:
    """A sensor visiting every point of `cloud` at the identity pose: one exposure."""
    rng = rng if rng is not None else np.random.default_rng(0)
    obs = []
    for i in range(len(cloud)):
        pose = cloud.pose[i] @ small_rotation(noise.pose_deg, rng).T if noise.pose_deg > 0 else cloud.pose[i]
        obs.append(Observation(cloud.points[i] + rng.normal(0, noise.location, 3), pose,
                               cloud.features[i] + rng.normal(0, noise.features, 2), bool(cloud.pose_defined[i])))
    return obs


def learn_models(names: list[str] | tuple[str, ...], voxel: float, spacing: float = 0.02, seed: int = 1,
                 noise: SensorNoise = NO_NOISE) -> list[ObjectModel]:
    """One model per object from one sweep of a surface sample (seed `seed`) at the identity pose."""
    rng = np.random.default_rng(seed)
    return [ObjectModel.learn(n, sweep_observations(make_object(n, spacing, seed), noise, rng), voxel) for n in names]


def sweep_at_pose(cloud: SurfaceCloud, rotation: np.ndarray, translation: np.ndarray, noise: SensorNoise,
                  rng: np.random.Generator) -> list[Observation]:
    """One exposure of `cloud` at an unknown pose, as the sensor reports it (for learning without labels)."""
    obs = sweep_observations(cloud, noise, rng)
    return [Observation(rotation @ o.location + translation, o.pose @ rotation.T, o.features, o.pose_defined)
            for o in obs]


def patch_offsets(n: int, spacing: float) -> np.ndarray:
    """Patch 0 at the centre, the others on rings around it (body frame, in the sensor's x-y plane)."""
    out = [np.zeros(3)]
    for k in range(1, n):
        ring = 1 + (k - 1) // 6
        a = 2 * np.pi * ((k - 1) % 6) / 6 + 0.5 * ring
        out.append(spacing * ring * np.array([np.cos(a), np.sin(a), 0.0]))
    return np.stack(out)


def make_ensemble(models: list[ObjectModel], columns: int, lm_config: LMConfig | None = None,
                  min_lms_match: int = 1) -> ColumnEnsemble:
    return ColumnEnsemble([EvidenceLM(models, lm_config) for _ in range(columns)], min_lms_match=min_lms_match)


def run_episode(ensemble: ColumnEnsemble, cloud: SurfaceCloud, rotation: np.ndarray, translation: np.ndarray,
                cfg: EpisodeConfig, rng: np.random.Generator, true_index: int | None = None,
                keep_history: bool = False, stop_on_no_match: bool = False) -> dict:
    """Recognise `cloud` placed at (rotation, translation). Returns the answer, steps, ADD-S and timing."""
    t0, c0 = time.perf_counter(), time.process_time()
    ensemble.reset()
    n = len(ensemble.columns)
    sensor = SurfaceSensor(cloud, rotation, translation, make_policy(cfg.policy, cfg.step), cfg.noise,
                           patch_offsets(n, cfg.patch_spacing), rng)
    decided, no_match, steps = False, False, 0
    sensed_points = []
    for steps in range(1, cfg.max_steps + 1):
        obs, disp = sensor.sense()
        sensed_points.append(obs[0].location)
        ensemble.step(obs, disp)
        if stop_on_no_match and all(c.no_match() for c in ensemble.columns):
            no_match = True
            break
        if ensemble.decided():
            decided = True
            break
        sensor.move()
    if no_match or not ensemble.columns[0].models:
        return {"predicted": -1, "name": None, "decided": False, "no_match": True, "steps": steps,
                "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                "sensed": np.stack(sensed_points), "correct": False, "add_s": None}
    obj, col = ensemble.answer()
    lm = ensemble.columns[col]
    _, rot, origin, _ = lm.best() if lm.best()[0] == obj else _best_of(lm, obj)
    if cfg.refine and obj >= 0:
        model = lm.models[obj]
        rot, origin = refine_pose(model.tree, model.points, np.stack(lm.sensed), rot, origin)
    out = {"predicted": int(obj), "name": lm.models[obj].name if obj >= 0 else None, "decided": decided,
           "no_match": False,
           "steps": steps, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
           "sensed": np.stack(sensed_points)}
    hyp = [h for c in ensemble.columns for h in c.hypotheses]
    out["hypotheses_first"] = int(sum(c.hypotheses[0] for c in ensemble.columns if c.hypotheses))
    out["hypotheses_mean"] = float(np.mean(hyp)) if hyp else 0.0
    if true_index is not None:
        out["correct"] = bool(obj == true_index)
        out["true_rank"] = true_rank(lm.object_evidence(), true_index)
        out["add_s"] = add_s(cloud.points, rot, origin, rotation, translation) / cloud.size \
            if obj == true_index else None
    if keep_history:
        out["history"] = np.stack(ensemble.columns[0].history)
    return out


def true_rank(evidence: np.ndarray, true_index: int) -> int:
    """Rank of the true object by evidence (0: it leads; ties count against it; pruned objects rank last)."""
    ev = np.where(np.isfinite(evidence), evidence, -np.inf)
    if not np.isfinite(ev[true_index]):
        return len(ev) - 1
    return int((np.delete(ev, true_index) >= ev[true_index]).sum())


def _best_of(lm: EvidenceLM, obj: int) -> tuple[int, np.ndarray, np.ndarray, float]:
    sel = np.flatnonzero(lm.obj == obj)
    h = sel[np.argmax(lm.ev[sel])]
    return obj, lm.rot[h], lm.sensed[-1] - lm.rot[h] @ lm.loc[h], float(lm.ev[h])
