import numpy as np
import pytest

from frugalnet.frames.abstract import (BagOfFeatures, GridCellNetwork, IdealObserver, make_abstract_objects,
                                       recognition_steps, share_recognised)


def test_generator_places_features_on_distinct_cells():
    objs = make_abstract_objects(20, 10, 10, 4, seed=0)
    assert objs.features.shape == (20, 16)
    assert ((objs.features >= 0).sum(1) == 10).all()
    assert objs.features.max() < 10
    with pytest.raises(ValueError, match="features_per_object"):
        make_abstract_objects(5, 10, features_per_object=17)


def test_network_never_beats_the_ideal_and_bag_is_worst():
    objs = make_abstract_objects(60, 10, seed=1)
    ideal = recognition_steps(objs, IdealObserver(objs), 10, seed=3)
    net = recognition_steps(objs, GridCellNetwork(objs, 4, 5, seed=0), 10, seed=3)
    bag = recognition_steps(objs, BagOfFeatures(objs), 10, seed=3)
    assert (net >= ideal).all()             # unions only add candidates
    assert (bag >= ideal).all()
    assert np.mean(bag) > np.mean(ideal) + 1
    curve = share_recognised(ideal, 10)
    assert curve == sorted(curve) and curve[-1] > 0.95


def test_large_network_matches_the_ideal_and_small_one_aliases():
    objs = make_abstract_objects(100, 10, seed=2)
    ideal = recognition_steps(objs, IdealObserver(objs), 10, seed=0)
    big = recognition_steps(objs, GridCellNetwork(objs, 20, 13, seed=0), 10, seed=0)
    tiny = recognition_steps(objs, GridCellNetwork(objs, 2, 3, seed=0), 10, seed=0)
    assert np.mean(big == ideal) > 0.95
    assert np.mean(tiny) > np.mean(ideal)


def test_columns_need_fewer_sensations():
    objs = make_abstract_objects(50, 10, seed=4)
    one = recognition_steps(objs, IdealObserver(objs), 10, columns=1, seed=0)
    three = recognition_steps(objs, [IdealObserver(objs) for _ in range(3)], 10, columns=3, seed=0)
    assert three.mean() < one.mean()
    with pytest.raises(ValueError, match="one observer per column"):
        recognition_steps(objs, IdealObserver(objs), 10, columns=2)
