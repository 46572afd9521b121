"""Packed storage: nibble packing, bit-exact reload for every weight format, size against FP32, bad files."""
import pytest
import torch

from frugalnet.lowbit import quantize_, quantized_layers
from frugalnet.lowbit import formats as F
from frugalnet.lowbit.packing import (decode_minifloat, encode_minifloat, fp32_checkpoint_bytes, load_packed,
                                      pack_nibbles, save_packed, unpack_nibbles)
from frugalnet.models.cnn import dense_cnn2


def test_nibbles_round_trip():
    codes = torch.randint(0, 16, (37,), dtype=torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.numel() == 19 and packed.dtype == torch.uint8
    assert torch.equal(unpack_nibbles(packed, 37), codes)
    with pytest.raises(ValueError, match="nibble"):
        pack_nibbles(torch.tensor([16], dtype=torch.uint8))


def test_minifloat_bytes_round_trip():
    for spec in (F.E4M3, F.E5M2):
        v = F.minifloat(torch.randn(500) * 30, spec)
        assert torch.equal(decode_minifloat(encode_minifloat(v, spec), spec), v)
    with pytest.raises(ValueError, match="grid"):
        encode_minifloat(torch.tensor([1.01]), F.E4M3)


@pytest.mark.parametrize("recipe", ["ibm4", "mxfp4", "nvfp4", "fp8", "int8", "fp32"])
def test_reload_is_bit_identical(recipe, tmp_path):
    torch.manual_seed(0)
    model = quantize_(dense_cnn2(channels=(8, 16), hidden=40), recipe)
    x = torch.randn(6, 1, 28, 28)
    model(x)
    save_packed(model, tmp_path / "m.fnp")
    state = load_packed(tmp_path / "m.fnp")
    for name, layer in quantized_layers(model):
        assert torch.equal(state[f"{name}.weight"].view(torch.int32), layer.quantized_weight().view(torch.int32))
    twin = quantize_(dense_cnn2(channels=(8, 16), hidden=40), recipe)
    load_packed(tmp_path / "m.fnp", twin)
    model.eval()
    twin.eval()
    assert torch.equal(model(x), twin(x))


@pytest.mark.parametrize("recipe", ["ibm4", "mxfp4", "nvfp4"])
@pytest.mark.parametrize("channels, hidden", [((32, 64), 700), ((16, 32), 128)])
def test_4bit_checkpoint_is_at_least_7x_smaller(recipe, channels, hidden, tmp_path):
    torch.manual_seed(0)
    model = dense_cnn2(channels=channels, hidden=hidden, batch_norm=False)
    reference = fp32_checkpoint_bytes(model)
    quantize_(model, recipe)
    model(torch.randn(2, 1, 28, 28))
    size = save_packed(model, tmp_path / "m.fnp")
    assert reference / size >= 7.0


def test_plain_and_compressed_files_hold_the_same_weights(tmp_path):
    torch.manual_seed(0)
    model = quantize_(dense_cnn2(channels=(8, 16), hidden=40), "nvfp4")
    model(torch.randn(2, 1, 28, 28))
    small = save_packed(model, tmp_path / "xz.fnp")
    plain = save_packed(model, tmp_path / "plain.fnp", compress=False)
    assert small < plain
    a, b = load_packed(tmp_path / "xz.fnp"), load_packed(tmp_path / "plain.fnp")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)) for k in a if a[k].is_floating_point())
    damaged = (tmp_path / "xz.fnp").read_bytes()[:100]
    (tmp_path / "damaged.fnp").write_bytes(damaged)
    with pytest.raises(ValueError, match="damaged"):
        load_packed(tmp_path / "damaged.fnp")


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_packed(tmp_path / "missing.fnp")
    torch.save({"a": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="packed checkpoint"):
        load_packed(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="quantize_"):
        save_packed(dense_cnn2(), tmp_path / "plain.fnp")
