import math

import pytest
import torch
from torch import nn

from frugalnet.sparsity import DistillConfig, Distiller, distillation_loss


def _reference(student, teacher, target, alpha, temp):
    """The loss written out element by element (no torch softmax / CE helpers)."""
    out = []
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), target.tolist()):
        log_z = math.log(sum(math.exp(v) for v in s_row))
        ce = log_z - s_row[y]
        zs = sum(math.exp(v / temp) for v in s_row)
        zt = sum(math.exp(v / temp) for v in t_row)
        p_s = [math.exp(v / temp) / zs for v in s_row]
        p_t = [math.exp(v / temp) / zt for v in t_row]
        kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
        out.append((1 - alpha) * ce + alpha * temp * temp * kl)
    return out


def test_loss_equals_hand_computed_reference():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 2, 3])
    for alpha, temp in ((0.5, 2.0), (0.9, 4.0), (0.3, 1.0)):
        cfg = DistillConfig(alpha=alpha, temperature=temp)
        want = _reference(s, t, y, alpha, temp)
        got = distillation_loss(s, t, y, cfg, reduction="none")
        assert got.tolist() == pytest.approx(want, rel=1e-12)
        assert float(distillation_loss(s, t, y, cfg)) == pytest.approx(sum(want) / len(want), rel=1e-12)
        assert float(distillation_loss(s, t, y, cfg, reduction="sum")) == pytest.approx(sum(want), rel=1e-12)


def test_limits_alpha_zero_is_cross_entropy_and_equal_logits_leave_only_ce():
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, t, y, DistillConfig(alpha=0.0)), ce)
    assert torch.allclose(distillation_loss(s, s.clone(), y, DistillConfig(alpha=0.4)), 0.6 * ce, atol=1e-6)
    assert float(distillation_loss(s, s.clone(), y, DistillConfig(alpha=1.0))) == pytest.approx(0.0, abs=1e-6)


def test_sequence_logits_give_one_loss_per_position():
    s, t, y = torch.randn(2, 3, 7), torch.randn(2, 3, 7), torch.randint(0, 7, (2, 3))
    cfg = DistillConfig(alpha=0.7, temperature=3.0)
    per = distillation_loss(s, t, y, cfg, reduction="none")
    assert per.shape == (2, 3)
    flat = distillation_loss(s.reshape(6, 7), t.reshape(6, 7), y.reshape(6), cfg, reduction="none")
    assert torch.allclose(per.reshape(6), flat)


def test_gradients_flow_only_through_the_student():
    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    d = Distiller(teacher, DistillConfig(alpha=0.8, temperature=2.0))
    assert d.teacher is not teacher and teacher.weight.requires_grad          # the user's model is left alone
    assert not any(p.requires_grad for p in d.teacher.parameters()) and not d.teacher.training
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    opt = torch.optim.SGD([*student.parameters(), *d.teacher.parameters()], lr=0.5)
    loss = d(student(x), x, y)
    loss.backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.teacher.parameters())
    opt.step()
    assert all(torch.equal(v, d.teacher.state_dict()[k]) for k, v in before.items())
    assert not d.teacher_logits(x).requires_grad


def test_fit_loss_feeds_the_teacher_the_students_input_and_removes_its_hook():
    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    d = Distiller(teacher, DistillConfig(alpha=0.5, temperature=2.0))
    loss_fn = d.fit_loss(student)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    student.train()
    out = student(x)
    per = loss_fn(out, y)
    assert per.shape == (5,) and torch.allclose(per, d(out, x, y, reduction="none"))
    with pytest.raises(RuntimeError, match="forward pass"):
        loss_fn(out, y)                      # the input is used once: a stale batch is never distilled
    loss_fn.remove()
    student(x)
    assert loss_fn.inputs is None


def test_fit_loss_trains_a_student_through_fit():
    from frugalnet.data.core import Split
    from frugalnet.experiment.training import FitConfig, fit

    torch.manual_seed(0)
    x = torch.randn(64, 6)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    y = teacher(x).argmax(1).detach()
    student = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    d = Distiller(teacher, DistillConfig(alpha=0.9, temperature=2.0))
    loss_fn = d.fit_loss(student)
    with torch.no_grad():
        before = float(d(student(x), x, y))
    fit(student, Split(x, y), FitConfig(epochs=5, batch_size=16, lr=0.1), loss_fn=loss_fn)
    loss_fn.remove()
    with torch.no_grad():
        assert float(d(student(x), x, y)) < before


@pytest.mark.parametrize("kwargs,name", [({"alpha": -0.1}, "alpha"), ({"alpha": 1.5}, "alpha"),
                                         ({"alpha": float("nan")}, "alpha"), ({"alpha": "0.5"}, "alpha"),
                                         ({"alpha": True}, "alpha"), ({"temperature": 0.0}, "temperature"),
                                         ({"temperature": -2.0}, "temperature"),
                                         ({"temperature": float("inf")}, "temperature")])
def test_config_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=f"DistillConfig.{name}"):
        DistillConfig(**kwargs)


def test_config_is_frozen():
    cfg = DistillConfig()
    with pytest.raises(AttributeError):
        cfg.alpha = 0.1


def test_bad_inputs_are_refused_up_front():
    s, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(s, torch.randn(4, 5), y)
    with pytest.raises(ValueError, match="target shape"):
        distillation_loss(s, torch.randn(4, 3), y[:3])
    with pytest.raises(ValueError, match="reduction"):
        distillation_loss(s, torch.randn(4, 3), y, reduction="avg")
    with pytest.raises(TypeError, match="teacher"):
        Distiller(lambda x: x)
    with pytest.raises(TypeError, match="DistillConfig"):
        Distiller(nn.Linear(2, 2), {"alpha": 0.5})
