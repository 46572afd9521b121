import pytest
import torch

pytest.importorskip("transformers")

from frugalnet.models.hf import hf_bert, hf_gpt2  # noqa: E402


@pytest.mark.parametrize("build,out_dim", [
    (lambda seed: hf_bert(hidden=32, ffn=64, layers=2, heads=4, seq=16, vocab=50, seed=seed), 32),
    (lambda seed: hf_gpt2(hidden=32, layers=2, heads=4, max_seq=16, vocab=50, seed=seed), 50)])
def test_hf_models_build_from_seed_and_export(build, out_dim):
    m = build(0)
    ids = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        y = m(ids)
        assert y.shape == (2, 16, out_dim)
        torch.testing.assert_close(build(0)(ids), y)
        assert not torch.equal(build(1)(ids), y)
        ep = torch.export.export(m, (ids,))
        torch.testing.assert_close(ep.module()(ids), y, rtol=1e-5, atol=1e-6)
