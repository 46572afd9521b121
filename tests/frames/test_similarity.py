"""Shape distance finds the same shape at any pose and tells different shapes apart."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from frugalnet.frames.objects3d import make_object
from frugalnet.frames.similarity import distinct_draw, near_duplicates, shape_descriptor, shape_distance


def test_same_shape_at_another_pose_and_sample_is_near_zero_and_different_shapes_are_not():
    a = make_object("l_block", 0.04, 0).points
    b = make_object("l_block", 0.04, 1).points @ Rotation.random(random_state=3).as_matrix().T + 5.0
    cube = make_object("cube", 0.04, 0).points
    same, other = shape_distance(a, b, starts=16), shape_distance(a, cube, starts=16)
    assert same < 0.03 < other
    assert np.allclose(shape_descriptor(a), shape_descriptor(a @ Rotation.random(random_state=4).as_matrix().T),
                       atol=0.02)


def test_near_duplicates_ranks_the_resampled_shape_first():
    clouds = {"torus": make_object("torus", 0.04, 0).points, "torus2": make_object("torus", 0.04, 7).points,
              "cube": make_object("cube", 0.04, 0).points, "sphere": make_object("sphere", 0.04, 0).points}
    pairs = near_duplicates(clouds, candidates=6, starts=8)
    assert len(pairs) == 6 and {pairs[0][1], pairs[0][2]} == {"torus", "torus2"}
    assert [p[0] for p in pairs] == sorted(p[0] for p in pairs)


def test_bad_input_says_so():
    with pytest.raises(ValueError, match="points"):
        shape_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="starts"):
        shape_distance(np.zeros((5, 3)), np.zeros((5, 3)), starts=0)


def test_distinct_draw_skips_a_resampled_shape_and_keeps_the_order():
    seeds = {"torus": 0, "torus_again": 7}
    def cloud(name, k):
        return make_object(name.replace("_again", ""), 0.04, seeds.get(name, 0) + 100 * k).points

    chosen, skipped, noise = distinct_draw(["torus", "cube", "torus_again", "sphere"], 3, cloud, starts=8)
    assert chosen == ["torus", "cube", "sphere"]
    assert [s[:2] for s in skipped] == [("torus_again", "torus")] and skipped[0][2] < skipped[0][3]
    assert set(noise) == {"torus", "cube", "torus_again", "sphere"}
    with pytest.raises(ValueError, match="distinct"):
        distinct_draw(["torus", "torus_again"], 2, cloud, starts=8)
    with pytest.raises(ValueError, match="margin"):
        distinct_draw(["torus"], 1, cloud, margin=0)
