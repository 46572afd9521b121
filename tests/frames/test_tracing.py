"""Replaying a decision rule on recorded evidence traces gives what the learning module decides live."""
import numpy as np
import pytest

from frugalnet.frames import evaluate as ev
from frugalnet.frames.learning_module import LMConfig
from frugalnet.frames.sensors import SensorNoise
from frugalnet.frames.tracing import replay, trace_episodes

NAMES = ("sphere", "cube", "torus", "dumbbell")


@pytest.mark.parametrize("lead_per_step", [0.0, 0.4])
def test_replay_matches_live_decisions(lead_per_step):
    lm = LMConfig(voxel=0.06, radius=0.09, min_steps=4, lead_per_step=lead_per_step)
    s = ev.Setting(spacing=0.04, voxel=0.06, noise=SensorNoise(), max_steps=25, lm=lm)
    models = ev.learn(NAMES, s, 0)
    live = ev.run_episodes(NAMES, models, s, 4, 1, 0, 10)
    traces = trace_episodes(NAMES, models, s, range(4), 0, 25)
    assert traces[0]["evidence"].shape == (25, len(NAMES))
    for i, (t, r) in enumerate(zip(traces, live)):
        one = replay([t], 25, min_steps=lm.min_steps, x_percent=lm.x_percent, min_lead=lm.min_lead,
                     lead_per_step=lm.lead_per_step, min_lead_steps=lm.min_lead_steps,
                     symmetry_steps=lm.symmetry_steps)
        assert one["median_steps"] == r["steps"], i
        assert one["accuracy"] == float(r["correct"]) and one["undecided"] == int(not r["decided"]), i
    strict = replay(traces, 25, min_steps=26)                  # never decides: every episode runs to the cap
    assert strict["undecided"] == 4 and strict["median_steps"] == 25
    assert 0 <= strict["accuracy"] <= 1 and np.isfinite(strict["median_steps"])
