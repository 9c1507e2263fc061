"""Capture from PyTorch models (optional extra: skipped without torch).

The oracle is PyTorch itself: captured tensors must be the ones torch computed (outputs,
weights, autograd gradients), and replaying them in fp32 must land within fp32 rounding of
torch's outputs (torch sums in another order, so not bit for bit).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra (pip install torch)")
nn = torch.nn
F = torch.nn.functional

from simulator.capture import capture_torch  # noqa: E402
from simulator.configs import Config  # noqa: E402
from simulator.replay import replay  # noqa: E402
from simulator.traces import load_trace, save_trace  # noqa: E402


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding="same", groups=2)
        self.fc = nn.Linear(32, 10)
        self.q = nn.Linear(10, 16)
        self.k = nn.Linear(10, 16)

    def forward(self, x):
        y = F.relu(self.c1(x))
        y = torch.flatten(self.c2(y.unsqueeze(2)), 1)
        y = F.gelu(self.fc(y), approximate="tanh")
        q, k = self.q(y).view(-1, 2, 8), self.k(y).view(-1, 2, 8)
        scores = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        att = F.scaled_dot_product_attention(q[None], k[None], k[None])
        return scores.sum(-1) + att.sum()


@pytest.fixture(scope="module")
def captured():
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(5, 3, 8)
    trace = capture_torch(model, x, loss_fn=lambda out, t: (out ** 2).mean(), target=None)
    return model, x, trace


def test_ops_kinds_and_graph(captured):
    _, _, trace = captured
    kinds = [(o.name, o.kind) for o in trace.ops]
    assert kinds == [("c1", "conv2d"), ("relu", "relu"), ("c2", "conv2d"),
                     ("flatten", "flatten"), ("fc", "linear"), ("gelu", "gelu"),
                     ("q", "linear"), ("k", "linear"), ("matmul", "matmul"),
                     ("softmax", "softmax"), ("attention_scores", "attention_scores")]
    links = {o.name: o.inputs_from for o in trace.ops}
    assert links["relu"] == ["c1"] and links["flatten"] == ["c2"] and links["fc"] == ["flatten"]
    assert links["gelu"] == ["fc"] and links["q"] == ["gelu"] and links["softmax"] == ["matmul"]
    assert links["c2"] == []            # unsqueeze is not recorded: the link is unknown
    assert trace.op("gelu").attrs["approximate"] == "tanh"
    assert trace.op("c2").attrs == {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
                                    "groups": 2}


def test_captured_tensors_are_torchs(captured):
    model, x, trace = captured
    with torch.no_grad():
        y1 = model.c1(x)
        fc_in = torch.flatten(model.c2(F.relu(y1).unsqueeze(2)), 1)
        fc_out = model.fc(fc_in)
    c1 = trace.op("c1").tensors
    assert np.array_equal(c1["input"], x.unsqueeze(2).numpy())
    assert np.array_equal(c1["weight"], model.c1.weight.detach().unsqueeze(2).numpy())
    assert np.array_equal(c1["output"], y1.unsqueeze(2).numpy())
    fc = trace.op("fc").tensors
    assert np.array_equal(fc["input"], fc_in.numpy())
    assert np.array_equal(fc["output"], fc_out.numpy())
    assert np.array_equal(fc["bias"], model.fc.bias.detach().numpy())


def test_gradients_are_autograds(captured):
    model, x, trace = captured
    model.zero_grad(set_to_none=True)
    xg = x.clone()
    out = model(xg)
    (out ** 2).mean().backward()
    fc = trace.op("fc").tensors
    assert np.array_equal(fc["grad_weight"], model.fc.weight.grad.numpy())
    assert fc["grad_output"].shape == (5, 10) and fc["grad_input"].shape == (5, 32)
    # dL/dx of fc = dL/dy @ W, computed by hand from the captured grad_output
    np.testing.assert_allclose(fc["grad_input"], fc["grad_output"] @ fc["weight"], rtol=1e-5,
                               atol=1e-7)
    assert trace.op("c1").tensors["grad_weight"].shape == (4, 3, 1, 3)


def test_round_trip_and_fp32_replay(captured, tmp_path):
    _, _, trace = captured
    loaded = load_trace(save_trace(trace, tmp_path / "t"))
    for mode in ("per-op", "propagated"):
        df = replay(loaded, [Config()], mode)
        out = df[df.role == "output"]
        assert set(out.op) >= {"c1", "c2", "fc", "q", "k", "matmul", "attention_scores"}
        assert (out.sqnr_db > 120).all(), out[["op", "sqnr_db"]]
    grads = replay(loaded, [Config(gradients="bf16")], "per-op")
    assert {"grad_output", "grad_weight"} <= set(grads.role)


def test_no_gradients_without_a_loss_and_task_accuracy():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(6, 4)
    with torch.no_grad():
        labels = model(x).argmax(-1).numpy()
    trace = capture_torch(model, x, labels=labels)
    assert [o.kind for o in trace.ops] == ["linear", "relu", "linear"]
    assert all("grad_output" not in o.tensors for o in trace.ops)
    assert trace.ops[2].inputs_from == [trace.ops[1].name]
    task = replay(trace, [Config()], "propagated").query("role == 'task'")
    assert task.reference_accuracy.item() == 1.0       # labels are torch's own predictions
    bad = capture_torch(model, x, labels=np.arange(3))
    assert "labels of shape" in replay(bad, [Config()], "propagated").query(
        "role == 'task'").error.item()


def test_a_module_called_twice_gets_each_calls_gradients():
    """Each call is its own op with its own grad_output (dL/dy of that call, from autograd);
    the weight's gradient sums both calls, so it is attached to neither."""
    torch.manual_seed(2)
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    x = torch.randn(4, 3)
    trace = capture_torch(model, x, loss_fn=lambda out, t: (out ** 2).sum(), target=None)
    first, second = trace.ops[0], trace.ops[2]
    assert first.name != second.name and first.kind == second.kind == "linear"
    # loss = sum(y2^2): dL/dy2 = 2 y2 for the second call
    np.testing.assert_allclose(second.tensors["grad_output"], 2 * second.tensors["output"],
                               rtol=1e-6)
    # first call: dL/dy1 = (dL/dy2 @ W) * relu'(y1)
    relu_mask = first.tensors["output"] > 0
    want = (second.tensors["grad_output"] @ second.tensors["weight"]) * relu_mask
    np.testing.assert_allclose(first.tensors["grad_output"], want, rtol=1e-5, atol=1e-7)
    assert "grad_weight" not in first.tensors and "grad_weight" not in second.tensors
