import pytest
import torch
from torch import nn

from frugalnet import sparsify_
from frugalnet.nn import KWinners, KWinners2d, SparseConv2d, SparseLinear


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, 4))


def test_sparsify_converts_layers_and_relus_in_place():
    model = small_cnn()
    dense_w = model[5].weight.detach().clone()
    out = sparsify_(model, weight_sparsity=0.5, activation_sparsity=0.75, exclude=["7"])
    assert out is model
    assert isinstance(model[0], SparseConv2d) and isinstance(model[5], SparseLinear)
    assert type(model[7]) is nn.Linear                        # excluded
    assert isinstance(model[3], KWinners2d) and model[3].channels == 8 and model[3].percent_on == 0.25
    assert isinstance(model[6], KWinners) and model[6].n == 16
    # kept weights are the dense ones, the rest are zero
    kept = model[5].weight_mask
    assert torch.equal(model[5].weight[kept], dense_w[kept]) and (model[5].weight[~kept] == 0).all()
    assert (model[5].weight_mask.sum(1) == 36).all()
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_sparsify_per_layer_mapping_and_keep_relus():
    model = small_cnn()
    sparsify_(model, weight_sparsity={"5": 0.9}, activation_sparsity=None)
    assert type(model[0]) is nn.Conv2d and isinstance(model[5], SparseLinear)
    assert isinstance(model[3], nn.ReLU) and isinstance(model[6], nn.ReLU)


def test_sparsify_same_seed_same_masks():
    a, b = sparsify_(small_cnn(), 0.5, seed=4), sparsify_(small_cnn(), 0.5, seed=4)
    assert torch.equal(a[0].weight_mask, b[0].weight_mask)


def test_sparsify_bad_arguments():
    with pytest.raises(ValueError, match="weight_sparsity"):
        sparsify_(small_cnn(), weight_sparsity=1.0)
    with pytest.raises(ValueError, match="activation_sparsity"):
        sparsify_(small_cnn(), 0.5, activation_sparsity=0.0)
    with pytest.raises(ValueError, match="not in the model"):
        sparsify_(small_cnn(), 0.5, exclude=["fc_out"])


# --- issue 17: errors that say what to do ------------------------------------------------------------------------

def test_mistyped_layer_name_in_mapping_is_an_error_with_close_matches():
    with pytest.raises(ValueError, match=r"'55' \(close: \['5'\]\)"):
        sparsify_(small_cnn(), weight_sparsity={"55": 0.9, "5": 0.5})
    from frugalnet.sparsity import MagnitudeConfig

    model = nn.Sequential(nn.Linear(4, 4))
    model.add_module("fc_out", nn.Linear(4, 2))
    with pytest.raises(ValueError, match="fc_outt.*fc_out"):
        sparsify_(model, MagnitudeConfig(sparsity=0.5, per_layer={"fc_outt": 0.9}))


def test_exclude_as_a_string_is_one_name():
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(4, 8))
    model.add_module("fc_out", nn.Linear(8, 2))
    sparsify_(model, weight_sparsity=0.5, exclude="fc_out")
    assert isinstance(model.fc1, SparseLinear) and type(model.fc_out) is nn.Linear


@pytest.mark.parametrize("make", [lambda: SparseLinear(0, 4, 0.5), lambda: SparseLinear(4, 0, 0.5),
                                  lambda: sparsify_(nn.Sequential(nn.Linear(0, 4)), weight_sparsity=0.5)])
def test_zero_size_layers_give_a_clear_error(make):
    with pytest.raises(ValueError, match="zero-size|at least one|>= 1"):
        make()


# --- configs and handlers -----------------------------------------------------------------------------------

def test_magnitude_layer_and_global():
    from frugalnet.sparsity import MagnitudeConfig
    from frugalnet.sparsity.pruning import measured_sparsity

    torch.manual_seed(0)
    model = small_cnn()
    w = model[5].weight.detach().clone()
    sparsify_(model, MagnitudeConfig(sparsity=0.75))
    kept = model[5].weight_mask
    assert kept.sum() == round(0.25 * w.numel())
    assert w[kept].abs().min() >= w[~kept].abs().max()          # the largest |w| survive
    g = small_cnn()
    sparsify_(g, MagnitudeConfig(sparsity=0.75, scope="global"))
    assert measured_sparsity(g)["total"] == pytest.approx(0.75, abs=0.01)


def test_nm_and_given_masks_and_erk():
    from frugalnet.sparsity import GivenMasksConfig, NMConfig, RandomFanInConfig

    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    sparsify_(model, NMConfig(n=2, m=4), exclude=["2"])
    assert (model[0].weight_mask.view(6, 2, 4).sum(-1) == 2).all()
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, :2] = True
    sparsify_(model, GivenMasksConfig(masks={"2": mask}))
    assert torch.equal(model[2].weight_mask, mask)
    with pytest.raises(ValueError, match="shape"):
        sparsify_(nn.Sequential(nn.Linear(3, 3)), GivenMasksConfig(masks={"0": mask}))
    big = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 2))
    sparsify_(big, RandomFanInConfig(sparsity=0.9, erk=True))
    total = sum(int(m.weight_mask.sum()) for m in big)
    assert total == pytest.approx(0.1 * (100 * 100 + 200), rel=0.05)
    assert big[1].weight_mask.all()                                  # ERK keeps the small layer dense


@pytest.mark.parametrize("bad", [dict(sparsity=1.0), dict(scope="net"), dict(per_layer={"a": 2.0})])
def test_config_validation_names_the_field(bad):
    from frugalnet.sparsity import MagnitudeConfig

    with pytest.raises(ValueError, match=list(bad)[0] if "per_layer" not in bad else "per_layer"):
        MagnitudeConfig(**bad)


def test_unknown_config_type_is_refused():
    with pytest.raises(TypeError, match="handler"):
        sparsify_(small_cnn(), object())


# --- activations anywhere -----------------------------------------------------------------------------------

class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 10)
        self.act = nn.GELU()
        self.out = nn.Linear(10, 6)

    def forward(self, x):
        return x + self.out(self.act(self.fc(x)))


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return torch.nn.functional.relu(self.fc(x))


def test_kwinners_anywhere_per_token_with_shape_probe_and_warnings():
    from frugalnet.sparsity import KWinnersConfig

    model = nn.Sequential(_Block(), _Functional())
    x = torch.randn(2, 5, 6)
    with pytest.warns(UserWarning, match=r"_Functional.forward.*relu"):
        _, summary = sparsify_(model, KWinnersConfig(percent_on=0.2), example_input=x, return_summary=True)
    assert isinstance(model[0].act, KWinners) and model[0].act.n == 10
    assert summary["activations"]["0.act"]["units"] == 10 and summary["functional"]
    y = model[0].fc(x)
    assert ((model[0].act(y) != 0).sum(-1) == 2).all()             # per token
    # without an example input the unit count is unknown outside a Sequential: reported, not guessed
    with pytest.warns(UserWarning, match="example_input"):
        sparsify_(nn.Sequential(_Block()), KWinnersConfig(percent_on=0.2))
    with pytest.warns(UserWarning, match="converted no activation"):
        sparsify_(nn.Sequential(nn.Linear(2, 2)), KWinnersConfig(percent_on=0.2))


def test_keyword_activation_sparsity_that_converts_nothing_warns():
    with pytest.warns(UserWarning, match="converted no activation"):
        sparsify_(nn.Sequential(_Block()), weight_sparsity=None, activation_sparsity=0.5)


# --- real layers: MultiheadAttention, ties ------------------------------------------------------------------

def test_multihead_attention_projections_are_masked_and_hold():
    from frugalnet.sparsity import MagnitudeConfig

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    sparsify_(layer, MagnitudeConfig(sparsity=0.8))
    attn = layer.self_attn
    assert attn.in_proj_weight_mask.float().mean() == pytest.approx(0.2, abs=0.01)
    assert attn.out_proj.weight_mask.float().mean() == pytest.approx(0.2, abs=0.01)
    with torch.no_grad():                                   # a manual update outside the mask...
        attn.in_proj_weight.add_(1.0)
    layer(torch.randn(2, 3, 16))                            # ...is masked before the next forward uses it
    assert (attn.in_proj_weight[~attn.in_proj_weight_mask] == 0).all()
    assert isinstance(layer.linear1, SparseLinear)


def test_tied_weights_are_refused_with_both_names():
    from frugalnet.sparsity import MagnitudeConfig

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(10, 4)
            self.lm_head = nn.Linear(4, 10, bias=False)
            self.lm_head.weight = self.wte.weight

    with pytest.raises(ValueError, match=r"lm_head.weight is tied to \['wte.weight'\].*exclude"):
        sparsify_(LM(), MagnitudeConfig(sparsity=0.5))
    model = sparsify_(LM(), MagnitudeConfig(sparsity=0.5), exclude=["lm_head"])
    assert model.lm_head.weight is model.wte.weight


def test_optimizer_built_before_conversion_still_trains_the_sparse_layers():
    from frugalnet.sparsity import MagnitudeConfig

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sparsify_(model, MagnitudeConfig(sparsity=0.75))
    before = model[0].weight.detach().clone()
    for _ in range(3):
        loss = model(torch.randn(4, 8)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    layer = model[0]
    assert isinstance(layer, SparseLinear)
    assert not torch.equal(layer.weight, before)                        # the old optimizer updates it
    assert (layer.weight[~layer.weight_mask] == 0).all()


def test_embeddings_only_when_asked_and_nm_needs_divisible_fan_in():
    from frugalnet.sparsity import MagnitudeConfig, NMConfig

    model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 4))
    sparsify_(model, MagnitudeConfig(sparsity=0.5))
    assert not hasattr(model[0], "weight_mask")
    sparsify_(model, MagnitudeConfig(sparsity=0.5, embeddings=True), exclude="1")
    assert model[0].weight_mask.float().mean() == pytest.approx(0.5)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    out = model[0](torch.arange(20))
    assert torch.equal(out != 0, model[0].weight_mask)                  # masked before the lookup
    with pytest.raises(ValueError, match="divisible by m"):
        sparsify_(nn.Sequential(nn.Linear(6, 2)), NMConfig(n=2, m=4))
    with pytest.raises(ValueError, match="n < m"):
        NMConfig(n=4, m=4)
