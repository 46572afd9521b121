"""The learning module, voting, episodes and baselines on small objects (coarse sampling keeps these fast)."""
import numpy as np
import pytest

from frugalnet.frames.baselines import D2Classifier, PointNet, d2_histogram, training_walks
from frugalnet.frames.episodes import (EpisodeConfig, learn_models, make_ensemble, run_episode, sweep_at_pose,
                                       sweep_observations)
from frugalnet.frames.learning_module import EvidenceLM, LMConfig, ObjectModel, lm_preset
from frugalnet.frames.objects3d import make_object
from frugalnet.frames.sensors import NO_NOISE, SensorNoise, random_rotations

NAMES = ("sphere", "cube", "torus", "dumbbell")
SP, VOX = 0.04, 0.06


@pytest.fixture(scope="module")
def models():
    return learn_models(NAMES, VOX, SP, seed=1)


def _cfg(noise=SensorNoise()):
    return LMConfig(voxel=VOX, radius=1.5 * VOX), EpisodeConfig(max_steps=60, noise=noise)


def test_model_is_voxel_thinned(models):
    dense = make_object("cube", SP, 1)
    assert len(models[1]) < len(dense)
    d = np.linalg.norm(models[1].points[:, None] - models[1].points[None], axis=-1) + np.eye(len(models[1]))
    assert d.min() > 0      # one point per voxel
    with pytest.raises(ValueError, match="zero observations"):
        ObjectModel.learn("x", [], 0.05)


def test_first_sensation_proposes_the_true_rotation(models):
    cloud = make_object("cube", SP, 7)
    rot = random_rotations(1, np.random.default_rng(0))[0]
    obs = sweep_at_pose(cloud, rot, np.zeros(3), NO_NOISE, np.random.default_rng(0))
    lm = EvidenceLM(models, LMConfig(voxel=VOX, radius=1.5 * VOX))
    lm.step(obs[0], np.zeros(3))
    cube = lm.obj == 1
    tr = np.einsum("ij,hij->h", rot, lm.rot[cube])
    assert np.degrees(np.arccos(np.clip((tr.max() - 1) / 2, -1, 1))) < 15


@pytest.mark.parametrize("true", range(len(NAMES)))
def test_recognises_objects_at_unseen_rotations_with_noise(models, true):
    lmc, ec = _cfg()
    rng = np.random.default_rng(10 + true)
    test = make_object(NAMES[true], SP, 99)           # another surface sample than the one learned
    rot, t = random_rotations(1, rng)[0], rng.uniform(-1, 1, 3)
    r = run_episode(make_ensemble(models, 1, lmc), test, rot, t, ec, rng, true_index=true)
    assert r["correct"], r
    assert r["add_s"] < 0.08
    assert r["steps"] <= ec.max_steps


def test_two_voting_columns_agree(models):
    lmc, ec = _cfg()
    rng = np.random.default_rng(3)
    test = make_object("torus", SP, 99)
    r = run_episode(make_ensemble(models, 2, lmc), test, random_rotations(1, rng)[0], np.zeros(3), ec, rng,
                    true_index=2)
    assert r["correct"]


def test_unknown_object_is_not_matched(models):
    lmc, ec = _cfg()
    rng = np.random.default_rng(5)
    test = make_object("l_block", SP, 99)
    r = run_episode(make_ensemble(models[:1], 1, lmc), test, np.eye(3), np.zeros(3), ec, rng,
                    stop_on_no_match=True)
    assert r["no_match"] and r["predicted"] == -1
    assert EvidenceLM([], lmc).no_match()
    with pytest.raises(ValueError, match="x_percent"):
        EvidenceLM([], LMConfig(x_percent=2.0))
    with pytest.raises(ValueError, match="min_lead"):
        EvidenceLM([], LMConfig(min_lead=-1.0))
    with pytest.raises(ValueError, match="LM preset"):
        lm_preset("clouds")


def test_baselines_interfaces():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(30, 3))
    rot = random_rotations(1, rng)[0]
    assert np.allclose(d2_histogram(pts), d2_histogram(pts @ rot.T + 3.0))
    clouds = [make_object(n, SP, 1) for n in ("sphere", "l_block")]
    sets, labels = training_walks(clouds, 6, 20, 25, NO_NOISE, 0)
    assert len(sets) == 12 and set(labels) == {0, 1} and all(20 <= len(s) <= 25 for s in sets)
    assert (D2Classifier().fit(sets, labels).predict(sets) == labels).mean() == 1.0
    import torch
    assert PointNet(3)(torch.zeros(2, 17, 3)).shape == (2, 3)
    assert len(sweep_observations(clouds[0])) == len(clouds[0])


def test_object_quota_and_keep_per_object_leave_no_object_without_hypotheses(models):
    cloud = make_object("torus", SP, 7)
    obs = sweep_at_pose(cloud, np.eye(3), np.zeros(3), SensorNoise(), np.random.default_rng(0))
    base = dict(voxel=VOX, radius=1.5 * VOX, max_hypotheses=40, init_feature_min=-1.0)   # every point proposes
    capped = EvidenceLM(models, LMConfig(**base))
    capped.step(obs[0], np.zeros(3))
    quota = EvidenceLM(models, LMConfig(**base, object_quota=1.0))
    quota.step(obs[0], np.zeros(3))
    assert len(capped.ev) == len(quota.ev) == 40
    assert np.isin(np.arange(len(NAMES)), quota.obj).all()               # each object keeps its best 10
    assert np.bincount(quota.obj, minlength=len(NAMES)).min() == 10
    kept = EvidenceLM(models, LMConfig(voxel=VOX, radius=1.5 * VOX, prune_margin=0.5, prune_frac=0.0,
                                       init_feature_min=-1.0, keep_per_object=2))
    for i in range(0, 60, 3):
        kept.step(obs[i], obs[i].location - obs[max(i - 3, 0)].location)
    assert np.bincount(kept.obj, minlength=len(NAMES)).min() >= 2        # outpaced objects survive, 2 poses each
    assert kept.best()[0] == 2
    for bad in ({"object_quota": 1.5}, {"plane_tol": 0.0}, {"keep_per_object": -1}, {"feature_weight": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EvidenceLM([], LMConfig(**bad))


def test_plane_distance_forgives_sliding_along_the_surface(models):
    """A hypothesis moved along a flat face of the cube (tangent drift) keeps its evidence with the plane distance
    but loses some with the point distance; moved off the surface it loses evidence with both."""
    cube = models[1]
    i = int(np.argmax(cube.points[:, 2]))                                # a point on the top face, normal +z
    obs = sweep_observations(make_object("cube", SP, 1))[0]
    obs.location, obs.pose = cube.points[i].copy(), cube.pose[i].copy()
    obs.features = cube.features[i].copy()
    scores = {}
    for plane in (False, True):
        lm = EvidenceLM(models, LMConfig(voxel=VOX, radius=1.5 * VOX, plane_distance=plane, anchor=0.0))
        lm.obj, lm.rot = np.array([1, 1]), np.stack([np.eye(3)] * 2)
        lm.loc = np.stack([cube.points[i] + [0.02, 0.0, 0.0], cube.points[i] + [0.0, 0.0, 0.03]])
        lm.ev = np.zeros(2)
        scores[plane] = lm._score(obs)
    assert scores[True][0] > scores[False][0] and scores[True][0] > 0.8
    assert scores[True][1] < scores[True][0] - 1.0


def test_true_rank_and_episode_diagnostics():
    from frugalnet.frames.episodes import true_rank
    from frugalnet.frames.evaluate import diagnose

    ev = np.array([3.0, 5.0, -np.inf, 5.0])
    assert true_rank(ev, 1) == 1          # a tie counts against the true object
    assert true_rank(ev, 0) == 2
    assert true_rank(ev, 2) == 3          # pruned: last
    recs = [{"object": "a", "decided": True, "correct": True, "steps": 30, "predicted_name": "a", "true_rank": 0},
            {"object": "b", "decided": True, "correct": False, "steps": 21, "predicted_name": "a", "true_rank": 2},
            {"object": "c", "decided": False, "correct": True, "steps": 200, "predicted_name": "c", "true_rank": 0}]
    assert [d["outcome"] for d in diagnose(recs)] == ["correct", "wrong", "undecided"]
    assert diagnose(recs)[1] == {"episode": 1, "object": "b", "outcome": "wrong", "correct": False, "steps": 21,
                                 "predicted": "a", "true_rank": 2}


def test_anchor_dir_turns_hypotheses_toward_the_stored_curvature_direction():
    from scipy.spatial.transform import Rotation

    from frugalnet.frames.learning_module import rotation_angle_deg

    lm = EvidenceLM([], LMConfig(anchor_dir=0.5))
    truth = Rotation.random(random_state=1).as_matrix()
    stored = np.array([[[0, 0, 1.0], [1, 0, 0], [0, 1, 0]]])       # rows: normal z, first direction x
    for deg, after in ((10, 5), (-20, 10), (170, 5), (60, 60)):     # 170 = -10 mod 180; 60 is past anchor_max_deg
        lm.rot = (truth @ Rotation.from_rotvec([0, 0, np.deg2rad(deg)]).as_matrix())[None].copy()
        lm._anchor_dir(np.array([0]), truth @ np.array([1.0, 0, 0]), stored, np.array([True]))
        flipped = truth @ np.diag([-1.0, -1, 1])                        # same surface, direction sign flipped
        assert min(rotation_angle_deg(truth, lm.rot)[0], rotation_angle_deg(flipped, lm.rot)[0]) \
            == pytest.approx(after, abs=1e-6)
    with pytest.raises(ValueError, match="anchor_dir"):
        LMConfig(anchor_dir=1.5).validate()
