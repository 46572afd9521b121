"""Scoring every object at once (Atlas) and re-localisation of an object whose poses lost track."""
import numpy as np
import pytest

from frugalnet.frames.episodes import learn_models
from frugalnet.frames.learning_module import EvidenceLM, LMConfig, rotation_angle_deg
from frugalnet.frames.matching import Atlas, match
from frugalnet.frames.objects3d import make_object
from frugalnet.frames.observations import Observation
from frugalnet.frames.sensors import SensorNoise, SurfaceSensor, make_policy, random_rotations

NAMES = ("cube", "torus", "l_block")
SP, VOX = 0.04, 0.06


@pytest.fixture(scope="module")
def models():
    return learn_models(NAMES, VOX, SP, seed=1)


def test_atlas_scores_equal_one_model_at_a_time(models):
    cfg = LMConfig(voxel=VOX, radius=1.5 * VOX, plane_distance=True)
    rng = np.random.default_rng(0)
    at = Atlas(models)
    obs = Observation(np.zeros(3), random_rotations(1, rng)[0], np.array([0.5, -0.2]), True)
    obj = rng.integers(0, len(models), 300)
    loc = np.stack([models[o].points[rng.integers(len(models[o]))] for o in obj]) + rng.normal(0, 0.03, (300, 3))
    rot = random_rotations(300, rng)
    loc[:20] += 2.5                                          # drifted far off: must not reach another object
    s_all, j_all, _ = match(at, at.place(obj, loc, cfg.radius), rot, obs, cfg)
    assert (s_all[:20] == -1).all()
    for o, m in enumerate(models):
        sel = obj == o
        s, j, _ = match(m, loc[sel], rot[sel], obs, cfg)
        np.testing.assert_allclose(s_all[sel], s)
        found = j < len(m)
        np.testing.assert_array_equal(j_all[sel] < len(at), found)
        jj = j_all[sel][found]                               # ties (points of one flat face) may pick another
        assert (at.owner[jj] == o).all()
        assert (np.linalg.norm(at.raw_pad[jj] - loc[sel][found], axis=1) <= cfg.radius).all()
    assert (s_all > -1).any() and (s_all == -1).any()        # some near the surface, some off it


def _lose_track_then_walk(models, reseed_after):
    """Recognise the L block; after 6 steps every L-block pose is moved off the model (lost track); walk on."""
    cfg = LMConfig(voxel=VOX, radius=1.5 * VOX, reseed_after=reseed_after, reseed_span=1e9, keep_per_object=3)
    lm = EvidenceLM(models, cfg)
    rng = np.random.default_rng(4)
    rot = random_rotations(1, rng)[0]
    sensor = SurfaceSensor(make_object("l_block", SP, 99), rot, np.zeros(3), make_policy("random"),
                           SensorNoise(), rng=rng)
    for step in range(30):
        if step:
            sensor.move()
        obs, disp = sensor.sense()
        lm.step(obs[0], disp[0])
        if step == 5:
            mine = lm.obj == 2
            lm.loc[mine] += 5.0
    mine = lm.obj == 2
    good = np.linalg.norm(lm.loc[mine] - sensor.cloud.points[sensor.index], axis=1) < 0.1
    return lm, (rotation_angle_deg(rot, lm.rot[mine][good]).min() if good.any() else 180.0)


def test_relocalisation_recovers_a_lost_pose_and_is_off_by_default(models):
    lm, err = _lose_track_then_walk(models, reseed_after=2)
    assert sum(lm.reseeded) >= 1
    assert err < 15
    lm0, err0 = _lose_track_then_walk(models, reseed_after=0)
    assert sum(lm0.reseeded) == 0
    assert err0 > 30                                         # without it the lost poses stay lost


@pytest.mark.parametrize("knob,value", [("reseed_after", -1), ("reseed_window", 0), ("reseed_max", 0),
                                        ("reseed_min", 1.5), ("reseed_below", -2), ("reseed_cost", -1),
                                        ("reseed_span", -1)])
def test_relocalisation_knobs_are_validated(knob, value):
    with pytest.raises(ValueError, match=knob):
        LMConfig(**{knob: value}).validate()


def test_votes_raise_exactly_the_hypotheses_they_support(models):
    cfg = LMConfig(voxel=VOX, radius=1.5 * VOX)
    rng = np.random.default_rng(2)
    lm = EvidenceLM(models, cfg)
    n = 200
    lm.obj = rng.integers(0, len(models), n)
    lm.loc = rng.uniform(-0.5, 0.5, (n, 3))
    lm.rot = random_rotations(n, rng)
    lm.ev = np.zeros(n)
    lm.born = np.zeros(n, np.int64)
    pick = rng.choice(n, 6, replace=False)                   # votes: 6 hypotheses nudged, one of another object
    vobj, vloc, vrot = lm.obj[pick].copy(), lm.loc[pick] + 0.01, lm.rot[pick].copy()
    vobj[0] = (vobj[0] + 1) % len(models)
    lm.receive_votes(vobj, vloc, vrot, share=0.5)
    tol = np.cos(np.deg2rad(cfg.pose_tolerance_deg * 1.5))
    want = np.zeros(n)
    for h in range(n):
        near = (vobj == lm.obj[h]) & (np.linalg.norm(vloc - lm.loc[h], axis=1) < cfg.radius)
        agree = (np.einsum("ij,vij->v", lm.rot[h], vrot) - 1) / 2 >= tol
        want[h] = 0.5 * cfg.vote_weight * (near & agree).any()
    np.testing.assert_allclose(lm.ev, want)
    assert want[pick[1:]].min() > 0 and want[pick[0]] == 0


def test_votes_are_each_running_objects_best_within_the_margin(models):
    cfg = LMConfig(voxel=VOX, radius=1.5 * VOX, vote_max=5, vote_margin=2.0, prune_margin=3.0, prune_frac=0.0)
    rng = np.random.default_rng(5)
    lm = EvidenceLM(models, cfg)
    n = 120
    lm.obj = np.repeat(np.arange(3), 40)
    lm.ev = np.concatenate([rng.uniform(8, 10, 40), rng.uniform(6, 9.5, 40), rng.uniform(0, 5, 40)])
    lm.loc, lm.rot = rng.normal(size=(n, 3)), random_rotations(n, rng)
    obj, loc, _ = lm.votes()
    assert set(obj) == {0, 1}                                # object 2 is out of the running (best < 10 - 3)
    for o in (0, 1):
        sel = np.flatnonzero(lm.obj == o)
        top = sel[lm.ev[sel] >= lm.ev[sel].max() - 2.0]
        want = top[np.argsort(lm.ev[top])[-5:]]
        np.testing.assert_allclose(np.sort(loc[obj == o], axis=0), np.sort(lm.loc[want], axis=0))


def test_votes_of_several_columns_in_one_call_count_each_column(models):
    cfg = LMConfig(voxel=VOX, radius=1.5 * VOX)
    rng = np.random.default_rng(6)

    def column():
        lm = EvidenceLM(models, cfg)
        lm.obj = np.repeat(np.arange(3), 30)
        lm.loc = np.random.default_rng(1).uniform(-0.5, 0.5, (90, 3))
        lm.rot = random_rotations(90, np.random.default_rng(2))
        lm.ev, lm.born = np.zeros(90), np.zeros(90, np.int64)
        return lm

    votes = []
    for s in range(3):                                       # 3 senders, each backing 5 hypotheses (some shared)
        pick = rng.choice(90, 5, replace=False)
        votes.append((np.repeat(np.arange(3), 30)[pick], column().loc[pick] + 0.01, column().rot[pick]))
    one_by_one, together = column(), column()
    for obj, loc, rot in votes:
        one_by_one.receive_votes(obj, loc, rot, share=0.25)
    together.receive_votes(*(np.concatenate(v) for v in zip(*votes)), share=0.25,
                           sender=np.repeat([0, 1, 2], 5))
    np.testing.assert_allclose(together.ev, one_by_one.ev)
    assert together.ev.max() > 0


def test_reseed_objects_caps_relocalisations_per_step(models):
    counts = {}
    for cap in (0, 1):
        lm = EvidenceLM(models, LMConfig(voxel=VOX, radius=1.5 * VOX, reseed_after=1, reseed_span=1e9,
                                         reseed_below=1.0, reseed_min=-1.0, reseed_objects=cap))
        rng = np.random.default_rng(4)
        sensor = SurfaceSensor(make_object("l_block", SP, 99), random_rotations(1, rng)[0], np.zeros(3),
                               make_policy("random"), SensorNoise(), rng=rng)
        for step in range(8):
            obs, disp = sensor.sense()
            lm.step(obs[0], disp[0])
            sensor.move()
        counts[cap] = max(lm.reseeded)
    assert counts[0] > 1 and counts[1] == 1
    with pytest.raises(ValueError, match="vote_every"):
        LMConfig(vote_every=0).validate()
    with pytest.raises(ValueError, match="reseed_objects"):
        LMConfig(reseed_objects=-1).validate()
