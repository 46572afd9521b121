"""Objects, observations, sensors and pose metrics."""
import numpy as np
import pytest

from frugalnet.frames.metrics import add_s, kabsch, refine_pose
from frugalnet.frames.objects3d import DISTINCT, SIMILAR, make_object, object_set
from frugalnet.frames.observations import Observation, log_curvature, right_handed
from frugalnet.frames.sensors import NO_NOISE, RandomWalk, SensorNoise, SurfaceSensor, make_policy, random_rotations


def test_object_sets_have_ten_distinct_and_ten_similar_shapes():
    assert len(set(DISTINCT)) == 10 and len(set(SIMILAR)) == 10
    assert object_set("similar") == SIMILAR
    with pytest.raises(ValueError, match="object set"):
        object_set("nope")
    with pytest.raises(ValueError, match="unknown shape"):
        make_object("teapot")
    with pytest.raises(ValueError, match="spacing"):
        make_object("sphere", spacing=1.0)


def test_sphere_has_unit_diameter_outward_normals_and_curvature_two():
    s = make_object("sphere", 0.05, 0)
    r = np.linalg.norm(s.points, axis=1)
    assert np.allclose(r, 0.5, atol=0.01)
    assert np.all(np.sum(s.normals * s.points, axis=1) > 0)           # outward
    assert np.allclose(s.curvatures, 2.0, atol=0.1)                     # 1 / radius
    assert not s.pose_defined.any()                                      # umbilic everywhere


def test_cylinder_side_has_defined_directions_around_the_axis():
    c = make_object("cylinder", 0.05, 0)
    side = np.abs(c.normals[:, 2]) < 0.1
    assert c.pose_defined[side].mean() > 0.9
    # the strongest curvature direction on the side runs around the axis (no z component)
    assert np.abs(c.pose[side, 1, 2]).mean() < 0.1
    frames = c.pose[side]
    assert np.allclose(np.linalg.det(frames), 1.0, atol=1e-6)


def test_observation_helpers():
    f = right_handed(np.array([0, 0, 2.0]), np.array([1.0, 0, 0.5]))
    assert np.allclose(f @ f.T, np.eye(3)) and np.isclose(np.linalg.det(f), 1)
    assert log_curvature(np.array([1e6]))[0] == 3.0 and log_curvature(np.array([-1.0]))[0] < 0
    with pytest.raises(ValueError, match="confidence"):
        Observation(np.zeros(3), np.eye(3), np.zeros(2), confidence=1.5)


def test_noise_free_sensor_reports_rotated_displacements():
    cloud = make_object("cube", 0.05, 0)
    rng = np.random.default_rng(0)
    rot = random_rotations(1, rng)[0]
    t = np.array([0.3, -0.2, 1.0])
    sensor = SurfaceSensor(cloud, rot, t, RandomWalk(0.08), NO_NOISE, rng=rng)
    obs, _ = sensor.sense()
    i0 = sensor.index
    sensor.move()
    obs, disp = sensor.sense()
    assert np.allclose(disp[0], rot @ (cloud.points[sensor.index] - cloud.points[i0]))
    assert np.allclose(obs[0].location, sensor.true_location())
    assert np.allclose(obs[0].pose, cloud.pose[sensor.index] @ rot.T)
    with pytest.raises(ValueError, match="policy"):
        make_policy("teleport")
    with pytest.raises(ValueError, match="location"):
        SensorNoise(location=-1)


def test_add_s_is_zero_at_the_truth_and_forgives_symmetry():
    s = make_object("sphere", 0.05, 0)
    rng = np.random.default_rng(1)
    r1, r2 = random_rotations(2, rng)
    assert add_s(s.points, r1, np.zeros(3), r1, np.zeros(3)) == 0
    assert add_s(s.points, r1, np.zeros(3), r2, np.zeros(3)) < 0.03     # any rotation of a sphere is right
    cube = make_object("cube", 0.05, 0)
    assert add_s(cube.points, r1, np.zeros(3), r1, np.array([0.2, 0, 0])) > 0.1


def test_kabsch_and_icp_recover_a_pose():
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(2)
    pts = rng.normal(size=(50, 3))
    rot = random_rotations(1, rng)[0]
    r, t = kabsch(pts, pts @ rot.T + 1.0)
    assert np.allclose(r, rot, atol=1e-8) and np.allclose(t, 1.0)
    cube = make_object("l_block", 0.03, 0)
    sensed = cube.points[::7] @ rot.T + 0.5
    small = rot @ np.array([[1, 0, 0], [0, np.cos(0.05), -np.sin(0.05)], [0, np.sin(0.05), np.cos(0.05)]])
    r2, t2 = refine_pose(cKDTree(cube.points), cube.points, sensed, small, np.full(3, 0.52), iterations=10)
    assert add_s(cube.points, r2, t2, rot, np.full(3, 0.5)) < add_s(cube.points, small, np.full(3, 0.52), rot,
                                                                     np.full(3, 0.5))
