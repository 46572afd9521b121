"""benchmarks/prune_char_transformer.py: its recipe options run end to end on a few steps."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "prune_char_transformer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("prune_char_transformer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rescale_init_restores_the_dense_output_scale(bench):
    from frugalnet.sparsity import RandomFanInConfig, sparsify_
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(400, 50, bias=False))
    x = torch.randn(256, 400)
    dense_std = float(layer(x).detach().std())
    sparsify_(layer, RandomFanInConfig(sparsity=0.75, seed=123))
    sparse_std = float(layer(x).detach().std())
    bench.rescale_init_(layer)
    assert sparse_std == pytest.approx(dense_std / 2, rel=0.15)      # a quarter of the fan-in: half the std
    assert float(layer(x).detach().std()) == pytest.approx(dense_std, rel=0.15)


def test_sparse_arms_run_with_the_recipe_options(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["x", "--seeds", "1", "--steps", "6", "--finetune", "4", "--methods", "dense",
                                      "oneshot", "gradual-train", "rigl", "oneshot-wanda", "oneshot-lsq",
                                      "--calib-batches", "2", "--curve", "0.5", "--sparse-decay", "0",
                                      "--rigl-rescale",
                                      "--train-prune-begin", "0.2", "--train-prune-end", "0.6", "--delta-t", "2"])
    bench.main()
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if " pts" in line}
    assert {"dense", "oneshot", "gradual-train", "rigl", "oneshot@0.5", "oneshot-global@0.5", "random@0.5",
            "blocks-zeroed", "oneshot-wanda", "oneshot-lsq", "oneshot-wanda@0.5", "oneshot-lsq@0.5"} <= set(rows)


def test_gradual_long_prunes_the_finished_dense_model(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["x", "--seeds", "1", "--steps", "4", "--finetune", "2", "--methods", "dense",
                                      "gradual-long", "dense-long", "--long-steps", "6", "--curve",
                                      "--density-lr"])
    bench.main()
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if " pts" in line}
    assert {"dense", "gradual-long", "dense-long"} <= set(rows)
    assert "gradual-long: sparsity over the pruned matrices 90.0%" in out


def test_density_lr_follows_the_pruner_and_scales_only_the_pruned_matrices(bench):
    from frugalnet.sparsity import GradualMagnitudePruner
    torch.manual_seed(0)
    model = bench.CharTransformer(20, bench.CONTEXT, 16, 1, heads=2)
    pruner = GradualMagnitudePruner(model, 0.9, begin_step=0, end_step=4, filter_fn=bench.blocks_only)
    scale = bench.density_lr(pruner)
    assert scale() == pytest.approx(1.0)
    pruner.prune_to(0.9)
    assert scale() == pytest.approx(10 ** 0.5)
    seen = {}

    class Spy:
        optimizer = None

        def step(self):
            seen.update({g["kind"]: g["lr"] for g in self.optimizer.param_groups})
    ids = torch.randint(0, 20, (500,))
    bench.train(model, ids, 1, 1e-2, 0, callbacks=[Spy()], warmup=1, pruned_lr_scale=scale)
    assert seen["pruned"] == pytest.approx(seen["dense"] * 10 ** 0.5) and seen["other"] == seen["dense"]


def test_distill_option_runs_the_fine_tuned_arms_and_rejects_bad_values(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["x", "--seeds", "1", "--steps", "4", "--finetune", "2", "--methods", "dense",
                                      "gradual", "gradual-long", "--long-steps", "4", "--curve", "--distill", "0.7",
                                      "--distill-temperature", "3"])
    bench.main()
    rows = {line.split()[0] for line in capsys.readouterr().out.splitlines() if " pts" in line}
    assert {"dense", "gradual", "gradual-long"} <= rows
    monkeypatch.setattr(sys, "argv", ["x", "--distill", "1.5"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "DistillConfig.alpha" in capsys.readouterr().err


def test_train_with_a_distiller_uses_its_loss(bench):
    from frugalnet.sparsity import DistillConfig, Distiller
    torch.manual_seed(0)
    teacher = bench.CharTransformer(20, bench.CONTEXT, 16, 1, heads=2)
    seen = []

    class Spy(Distiller):
        def __call__(self, out, x, y, reduction="mean"):
            seen.append((tuple(out.shape), tuple(x.shape)))
            return super().__call__(out, x, y, reduction)
    student = bench.CharTransformer(20, bench.CONTEXT, 16, 1, heads=2)
    bench.train(student, torch.randint(0, 20, (500,)), 2, 1e-2, 0, distiller=Spy(teacher, DistillConfig(0.5, 2.0)))
    assert seen == [((bench.BATCH, bench.CONTEXT, 20), (bench.BATCH, bench.CONTEXT))] * 2


def test_prune_then_regrow_moves_the_mask_after_pruning_at_constant_sparsity(bench):
    from frugalnet.sparsity import GradualMagnitudePruner
    from frugalnet.sparsity.targets import get_mask, masked_targets
    torch.manual_seed(0)
    model = bench.CharTransformer(20, bench.CONTEXT, 16, 1, heads=2)
    pruner = GradualMagnitudePruner(model, 0.8, begin_step=0, end_step=3, frequency=1, filter_fn=bench.blocks_only)
    cb = bench.PruneThenRegrow(model, pruner, alpha=0.3, delta_t=2, stop=9, seed=0)
    masks = {}

    class Spy:
        optimizer = None

        def step(self):
            if cb.t == pruner.end:
                masks.update({t.name: get_mask(t).clone() for t in masked_targets(model)})
    bench.train(model, torch.randint(0, 20, (500,)), 9, 1e-2, 0, callbacks=[cb, Spy()], warmup=1)
    cb.remove()
    after = {t.name: get_mask(t) for t in masked_targets(model)}
    assert cb.rigl is not None and cb.rigl.optimizer is not None       # RigL got the optimizer: it resets moments
    assert pruner.current == pytest.approx(0.8)
    assert all(int(after[k].sum()) == int(m.sum()) for k, m in masks.items())        # each layer keeps its count
    assert any(not torch.equal(after[k], m) for k, m in masks.items())               # and the mask moved


def test_regrow_option_runs_and_rejects_bad_values(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["x", "--seeds", "1", "--steps", "4", "--finetune", "2", "--methods", "dense",
                                      "gradual-long", "--long-steps", "8", "--curve", "--long-regrow", "0.3",
                                      "--long-regrow-every", "2"])
    bench.main()
    assert "gradual-long: sparsity over the pruned matrices 90.0%" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["x", "--long-regrow", "1.5"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--long-regrow must be in [0, 1]" in capsys.readouterr().err
