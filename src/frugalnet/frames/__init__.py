"""Reference-frame object recognition: objects as features at locations, sensors that move, evidence over (object,
pose) hypotheses, columns that vote, synthetic object sets (3D shapes; Lewis et al. 2019 abstract objects) and real
meshes (OBJ files: the 77-mesh `meshes` set from pybullet's data, or a folder of your own).

numpy/scipy only (the PointNet baseline uses torch). Typical use::

    from frugalnet import frames
    models = frames.learn_models(frames.DISTINCT, voxel=0.04)          # one exposure each, at one pose
    ens = frames.make_ensemble(models, columns=2)
    out = frames.run_episode(ens, frames.make_object("mug", seed=7), rotation, translation,
                             frames.EpisodeConfig(), rng)               # answer, steps, pose, timing
"""
from frugalnet.frames.abstract import (AbstractObjects, BagOfFeatures, GridCellNetwork, IdealObserver,
                                       make_abstract_objects, recognition_steps, share_recognised)
from frugalnet.frames.baselines import D2Classifier, PointNetClassifier, d2_histogram
from frugalnet.frames.episodes import (EpisodeConfig, learn_models, make_ensemble, patch_offsets, run_episode,
                                       sweep_at_pose, sweep_observations)
from frugalnet.frames.learning_module import EvidenceLM, LMConfig, ObjectModel, lm_preset
from frugalnet.frames.metrics import add_s, refine_pose
from frugalnet.frames.catalog import (add_mesh, add_mesh_folder, available_objects, make_object, mesh_set,
                                      object_set)
from frugalnet.frames.meshes import read_obj, surface_from_mesh
from frugalnet.frames.objects3d import DISTINCT, SIMILAR, SurfaceCloud, available_shapes
from frugalnet.frames.observations import Observation
from frugalnet.frames.similarity import near_duplicates, shape_distance
from frugalnet.frames.sensors import CurvatureFollow, RandomWalk, SensorNoise, SurfaceSensor, random_rotations
from frugalnet.frames.voting import ColumnEnsemble

__all__ = [
    "AbstractObjects", "BagOfFeatures", "GridCellNetwork", "IdealObserver", "make_abstract_objects",
    "recognition_steps", "share_recognised", "D2Classifier", "PointNetClassifier", "d2_histogram", "EpisodeConfig",
    "learn_models", "make_ensemble", "patch_offsets", "run_episode", "sweep_at_pose", "sweep_observations",
    "EvidenceLM", "LMConfig", "ObjectModel", "lm_preset", "add_s", "refine_pose", "DISTINCT", "SIMILAR", "SurfaceCloud",
    "available_shapes", "make_object", "object_set", "add_mesh", "add_mesh_folder", "available_objects", "mesh_set",
    "read_obj", "surface_from_mesh", "Observation", "CurvatureFollow", "RandomWalk", "SensorNoise",
    "SurfaceSensor", "random_rotations", "ColumnEnsemble", "near_duplicates", "shape_distance",
]
