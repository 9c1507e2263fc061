"""Capture from PyTorch models (optional extra: skipped without torch).

The oracle is PyTorch itself: captured tensors must be the ones torch computed (outputs,
weights, autograd gradients), and replaying them in fp32 must land within fp32 rounding of
torch's outputs (torch sums in another order, so not bit for bit).
"""
import math
import warnings

import numpy as np
import pandas.testing as pd_testing
import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra (pip install torch)")
nn = torch.nn
F = torch.nn.functional

from mac_models import Matmul, layer_cost  # noqa: E402
from simulator import einsum, graph_ops  # noqa: E402
from simulator.capture import capture_torch  # noqa: E402
from simulator.configs import Config  # noqa: E402
from simulator.replay import replay  # noqa: E402
from simulator.traces import Trace, TraceError, load_trace, save_trace  # noqa: E402


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
    with pytest.warns(UserWarning, match=r"^add \(after sum\): an input depends"):
        trace = capture_torch(model, x, loss_fn=lambda out, t: (out ** 2).mean(), target=None)
    return model, x, trace


def test_ops_kinds_and_graph(captured):
    _, _, trace = captured
    kinds = [(o.name, o.kind) for o in trace.ops]
    assert kinds == [("c1", "conv2d"), ("relu", "relu"), ("c2", "conv2d"),
                     ("flatten", "flatten"), ("fc", "linear"), ("gelu", "gelu"),
                     ("q", "linear"), ("k", "linear"), ("permute", "permute"),
                     ("matmul", "matmul"), ("softmax", "softmax"),
                     # q[None] and k[None] (indexing), then SDPA as the ops it computes
                     ("index", "index"), ("index_2", "index"), ("index_3", "index"),
                     ("permute_2", "permute"), ("attention_scores", "attention_scores"),
                     ("mul", "mul"), ("softmax_2", "softmax"), ("matmul_2", "matmul"),
                     ("add", "add")]     # of two sums, which are not recorded: no links
    links = {o.name: o.inputs_from for o in trace.ops}
    assert links["relu"] == ["c1"] and links["flatten"] == ["c2"] and links["fc"] == ["flatten"]
    assert links["gelu"] == ["fc"] and links["q"] == ["gelu"] and links["softmax"] == ["matmul"]
    assert links["c2"] == ["relu"]      # unsqueeze is not recorded: it passes the link on
    assert links["permute"] == ["k"] and links["matmul"] == ["q", "permute"]
    assert links["permute_2"] == ["index_2"] and links["matmul_2"] == ["softmax_2", "index_3"]
    assert links["attention_scores"] == ["index", "permute_2"]
    assert trace.op("mul").tensors["other"] == np.float64(1 / np.sqrt(8))
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
    # one call: its own weight gradient (float64 from its input and grad_output) is autograd's
    np.testing.assert_allclose(fc["grad_weight"], model.fc.weight.grad.numpy(), rtol=1e-5,
                               atol=1e-6)
    assert fc["grad_output"].shape == (5, 10) and fc["grad_input"].shape == (5, 32)
    # dL/dx of fc = dL/dy @ W, computed by hand from the captured grad_output
    np.testing.assert_allclose(fc["grad_input"], fc["grad_output"] @ fc["weight"], rtol=1e-5,
                               atol=1e-7)
    for conv in ("c1", "c2"):                       # Conv1d (lifted) and a grouped Conv2d
        w = getattr(model, conv).weight.grad
        np.testing.assert_allclose(trace.op(conv).tensors["grad_weight"],
                                   (w.unsqueeze(2) if w.ndim == 3 else w).numpy(), rtol=1e-5,
                                   atol=1e-6)


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
    with pytest.raises(TraceError, match=r"labels of shape \(3,\) do not match the logits of "
                                         r"the model's output op '2', \(6, 2\)"):
        capture_torch(model, x, labels=np.arange(3))
    trace.extras["labels"] = np.arange(3)            # changed after the trace was made
    assert "labels of shape" in replay(trace, [Config()], "propagated").query(
        "role == 'task'").error.item()

    class Pool(nn.Module):               # the head, an einsum no op holds, is not recorded:
        def __init__(self):              # the labels fit its logits, not the last op's
            super().__init__()
            self.lin, self.c = nn.Linear(4, 6), nn.Parameter(torch.randn(3, 6))

        def forward(self, x):                               # x (2, 5, 4)
            return torch.einsum("btd,cd->bc", self.lin(x), self.c)

    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        pooled = capture_torch(Pool(), torch.randn(2, 5, 4), labels=np.array([0, 2]))
    assert "not the output of a recorded op" in str(caught[-1].message)
    assert [o.name for o in pooled.ops] == ["lin"] and "output" not in pooled.meta


def test_a_module_called_twice_gets_each_calls_gradients():
    """Each call is its own op with its own grad_output (dL/dy of that call, from autograd) and
    its own weight gradient; autograd's .grad of the shared weight is their sum."""
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
    for op in (first, second):
        t = op.tensors
        np.testing.assert_allclose(t["grad_weight"], t["grad_output"].T.astype(float) @
                                   t["input"].astype(float), rtol=1e-12)
    model.zero_grad()
    (model(x) ** 2).sum().backward()
    np.testing.assert_allclose(first.tensors["grad_weight"] + second.tensors["grad_weight"],
                               lin.weight.grad.numpy(), rtol=1e-5, atol=1e-6)


def _exact_fp32():
    return Config("fp32", "fp32", {"accumulator": "exact"}, name="fp32")


class _Res(nn.Module):
    """h = fc1(x); h += x, h.clamp_() or h.sin_() (not recorded); fc2(relu_(h))."""
    def __init__(self, change: str):
        super().__init__()
        self.fc1, self.fc2, self.change = nn.Linear(8, 8), nn.Linear(8, 3), change

    def forward(self, x):
        h = self.fc1(x)
        if self.change == "add":
            h += x
        elif self.change == "clamp":
            h.clamp_(-0.5, 0.5)
        else:
            h.sin_()
        return self.fc2(F.relu(h, inplace=True))


@pytest.mark.parametrize("change", ["sin", "add", "clamp"])
def test_an_in_place_change_drops_the_graph_link_or_is_recorded(change):
    """h = fc1(x); h.sin_(); fc2(h): fc2's input is not fc1's output any more, so propagated
    replay must not feed it fc1's (it measured 1 dB at fp32 and a wrong accuracy).  h += x is
    recorded as an add of fc1's output as it was and the constant x; h.clamp_() as a clamp of
    fc1's output as it was."""
    torch.manual_seed(3)
    model, x = _Res(change).eval(), torch.randn(6, 8)
    with torch.no_grad():
        h1 = model.fc1(x)
        h = {"add": h1 + x, "clamp": h1.clamp(-0.5, 0.5), "sin": h1.sin()}[change]
        labels = model(x).argmax(-1).numpy()
    if change == "sin":
        with pytest.warns(UserWarning, match=r"^relu \(after sin\): an input depends"):
            trace = capture_torch(model, x, labels=labels)
        assert [(o.name, o.inputs_from) for o in trace.ops] == [
            ("fc1", []), ("relu", []), ("fc2", ["relu"])]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            trace = capture_torch(model, x, labels=labels)
        assert [(o.name, o.inputs_from) for o in trace.ops] == [
            ("fc1", []), (change, ["fc1"]), ("relu", [change]), ("fc2", ["relu"])]
        t = trace.op(change).tensors
        assert np.array_equal(t["input"], h1.numpy()) and np.array_equal(t["output"], h.numpy())
        if change == "add":
            assert np.array_equal(t["other"], x.numpy())
        else:
            assert trace.op("clamp").attrs == {"min": -0.5, "max": 0.5}
    # the in-place relu recorded its input as it was before the call
    assert np.array_equal(trace.op("relu").tensors["input"], h.numpy())
    df = replay(trace, [_exact_fp32()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all()
    assert df[df.role == "task"].accuracy.item() == 1.0


@pytest.mark.parametrize("with_loss", [False, True])
def test_an_unrecorded_operation_between_modules_is_reported(with_loss, recwarn):
    """A global max by ``amax`` is not recorded, so the classifier's input has no source and
    propagated replay feeds it the captured input: capture says so, naming the op.  The
    model's own input (a fresh view of it, with a loss) and a flatten are no such break."""
    class Net(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.conv, self.pool = nn.Conv2d(3, 4, 3), pool
            self.fc = nn.Linear(4 if pool else 4 * 4 * 4, 2)

        def forward(self, x):
            h = F.relu(self.conv(x))
            return self.fc(h.amax((2, 3)) if self.pool else torch.flatten(h, 1))

    x = torch.randn(2, 3, 6, 6, requires_grad=with_loss)
    kw = {"loss_fn": lambda out, t: out.sum(), "target": None} if with_loss else {}
    with pytest.warns(UserWarning, match=r"^fc \(after amax\): an input depends"):
        trace = capture_torch(Net(True), x, **kw)
    assert trace.op("fc").inputs_from == []
    recwarn.clear()
    trace = capture_torch(Net(False), x, **kw)
    assert [str(w.message) for w in recwarn] == []
    assert trace.op("fc").inputs_from == ["flatten"] and trace.op("relu").inputs_from == ["conv"]


def test_the_unlinked_warning_names_three_ops_and_counts_the_rest():
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.fcs = nn.ModuleList(nn.Linear(4, 4) for _ in range(5))

        def forward(self, x):
            for fc in self.fcs:
                x = fc(x).sin()                # an unrecorded op between every two layers
            return x

    with pytest.warns(UserWarning, match="scores the last recorded op's, fcs.4, as the model"), \
            pytest.warns(UserWarning, match=r"^fcs\.1 \(after sin\), fcs\.2 \(after sin\), "
                                            r"fcs\.3 \(after sin\) and 1 more ops: an input"):
        capture_torch(Chain(), torch.randn(2, 4))      # the output is sin's: not recorded


def test_grad_input_and_grad_weight_are_each_calls_own():
    """fc0 feeds both q and k: q's grad_input is dL/dy_q @ W_q (its own share), not the total
    that reaches fc0's output; q and k share one weight (tied), and each gets its own weight
    gradient, which autograd sums into the one .grad; fc0's is autograd's."""
    class QK(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc0, self.q, self.k = nn.Linear(4, 4), nn.Linear(4, 3), nn.Linear(4, 3)
            self.k.weight = self.q.weight

        def forward(self, x):
            h = self.fc0(x)
            return self.q(h) * 2 + self.k(h)

    torch.manual_seed(4)
    model, x = QK(), torch.randn(5, 4)
    trace = capture_torch(model, x, loss_fn=lambda o, t: (o ** 2).sum(), target=None)
    q, k, fc0 = trace.op("q").tensors, trace.op("k").tensors, trace.op("fc0").tensors
    for t in (q, k):
        np.testing.assert_allclose(t["grad_input"], t["grad_output"] @ t["weight"], rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(fc0["grad_output"], q["grad_input"] + k["grad_input"],
                               rtol=1e-5, atol=1e-6)
    for t in (q, k):
        np.testing.assert_allclose(t["grad_weight"], t["grad_output"].T.astype(float) @
                                   t["input"].astype(float), rtol=1e-12)
    model.zero_grad()
    out = model(x)
    (out ** 2).sum().backward()
    np.testing.assert_allclose(q["grad_weight"] + k["grad_weight"], model.q.weight.grad.numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fc0["grad_weight"], model.fc0.weight.grad.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_capture_keeps_the_users_gradients():
    torch.manual_seed(5)
    model, x = nn.Linear(3, 2), torch.randn(4, 3)
    model.weight.grad = torch.full((2, 3), 7.0)
    capture_torch(model, x, loss_fn=lambda o, t: o.sum(), target=None)
    assert torch.equal(model.weight.grad, torch.full((2, 3), 7.0)) and model.bias.grad is None


def test_keyword_arguments_and_grouped_query_attention():
    """matmul(input=, other=), linear modules called with input=, and SDPA with query=/key=
    and 4 query heads over 2 key heads: captured and linked (the key heads repeated by an
    expand op), and propagated replay at exact fp32 reproduces torch's values."""
    class KW(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            h = self.fc(input=x)
            s = torch.matmul(input=h, other=h.transpose(-2, -1))
            q, k = h.view(1, 4, 2, 2), h.view(1, 2, 4, 2)[:, :, :2]
            a = F.scaled_dot_product_attention(query=q, key=k, value=k, enable_gqa=True)
            return s.sum() + a.sum()

    torch.manual_seed(6)
    model, x = KW(), torch.randn(2, 8)
    with pytest.warns(UserWarning, match=r"^add \(after sum\): an input depends"):     # of two sums
        trace = capture_torch(model, x)
    assert [(o.kind, o.inputs_from) for o in trace.ops] == [
        ("linear", []), ("permute", ["fc"]), ("matmul", ["fc", "permute"]),
        ("index", ["fc"]), ("expand", ["index"]), ("expand", ["index"]),
        ("permute", ["expand"]), ("attention_scores", ["fc", "permute_2"]),
        ("mul", ["attention_scores"]), ("softmax", ["mul"]), ("matmul", ["softmax", "expand_2"]),
        ("add", [])]
    q = (x @ model.fc.weight.detach().T + model.fc.bias.detach()).detach()
    mm = trace.op("matmul").tensors
    np.testing.assert_allclose(mm["a"], q.numpy(), rtol=1e-6)
    np.testing.assert_allclose(mm["b"], q.T.numpy(), rtol=1e-6)
    df = replay(trace, [_exact_fp32()], "propagated")
    out = df[(df.role == "output") & (df.kind != "add")]
    assert len(out) == 11 and (out.sqnr_db > 130).all()
    sc = trace.op("attention_scores").tensors
    k = q.view(1, 2, 4, 2)[:, :, :2].repeat_interleave(2, dim=1)
    assert sc["b"].shape == (1, 4, 2, 2)
    np.testing.assert_allclose(sc["b"], k.transpose(-2, -1).numpy(), rtol=1e-6)
    # the kernel reads the 2 key heads once, not once per query head: 2 heads of 2 x 2 fp32
    # values for the scores' b and for the product's b (20 pJ a bit from DRAM)
    rows = df[df.role == "output"].set_index("op")
    mac = _exact_fp32().build_mac()
    for op, kept in (("attention_scores", {"out"}), ("matmul_2", {"a"})):
        whole = layer_cost(Matmul(2, 2, 2, 4, True), mac, on_chip=kept)   # 4 heads of 2 x 2
        want = whole.memory_pj - whole.memory["b"].energy_pj + 2 * 4 * 32 * 20.0
        assert rows.loc[op, "memory_pj"] == pytest.approx(want), op


def test_checkpointing_records_no_phantom_ops():
    from torch.utils.checkpoint import checkpoint

    class Ck(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(checkpoint(lambda t: F.relu(self.fc1(t)), x, use_reentrant=False))

    torch.manual_seed(7)
    model, x = Ck(), torch.randn(3, 4)
    trace = capture_torch(model, x, loss_fn=lambda o, t: (o ** 2).sum(), target=None)
    assert [o.name for o in trace.ops] == ["fc1", "relu", "fc2"]
    model.zero_grad()
    (model(x) ** 2).sum().backward()
    np.testing.assert_allclose(trace.op("fc1").tensors["grad_weight"],
                               model.fc1.weight.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_a_repeat_call_is_never_named_like_another_module():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.fc_2 = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc_2(self.fc(self.fc(x)))

    model, x = Two(), torch.randn(2, 3)
    trace = capture_torch(model, x)
    assert [o.name for o in trace.ops] == ["fc", "fc_3", "fc_2"]
    assert np.array_equal(trace.op("fc_2").tensors["weight"], model.fc_2.weight.detach().numpy())


def test_bfloat16_is_stored_as_bfloat16():
    import ml_dtypes
    model = nn.Linear(4, 3).to(torch.bfloat16)
    x = torch.randn(2, 4, dtype=torch.bfloat16)
    fc = capture_torch(model, x).op("linear").tensors       # the model itself: named by kind
    assert fc["input"].dtype == ml_dtypes.bfloat16
    assert np.array_equal(fc["input"].astype(np.float32), x.float().numpy())


def test_unmodelled_conv_is_left_out_with_a_warning_and_mha_is_named():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
                          nn.Conv2d(2, 2, 3, padding=1))
    with pytest.warns(UserWarning, match="reflect"):
        trace = capture_torch(model, torch.randn(1, 2, 5, 5))
    assert [o.name for o in trace.ops] == ["1"] and trace.ops[0].inputs_from == []
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)       # training: dropout on
    with pytest.warns(UserWarning) as caught:
        capture_torch(layer, torch.randn(1, 3, 8))
    assert "self_attn" in str(caught[0].message)
    assert str(caught[1].message).startswith("linear2 (after dropout), add (after dropout): ")


def test_inference_mode_2d_attention_whole_flatten_and_tied_embedding():
    """Regressions a review found: inference-mode tensors have no version counter; SDPA of 2-D
    operands; torch.flatten(x) from dim 0; a head tied to an embedding gets its own call's
    weight gradient (autograd's .grad also holds the embedding's); the inputs' .grad kept."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(6, 4), nn.Linear(4, 6, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids, extra):
            h = self.emb(ids) + extra
            s = F.scaled_dot_product_attention(h, h, h)
            return self.head(torch.flatten(s, 0).view(-1, 4))

    torch.manual_seed(8)
    model, ids, extra = M(), torch.tensor([1, 2, 3]), torch.randn(3, 4, requires_grad=True)
    extra.grad = torch.full((3, 4), 5.0)
    for mode, flatten in ((torch.inference_mode, []), (torch.no_grad, ["matmul"])):
        with mode(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trace = capture_torch(model, (ids, extra))
        # h depends on no recorded op; SDPA's own ops are linked by name
        assert [(o.kind, o.inputs_from) for o in trace.ops] == [
            ("permute", []), ("attention_scores", []), ("mul", ["attention_scores"]),
            ("softmax", ["mul"]), ("matmul", ["softmax"]), ("flatten", flatten),
            ("linear", flatten and ["flatten"])]
        assert [str(w.message)[:40] for w in caught] == (
            ["tensors made under torch.inference_mode("] if not flatten else [])
    trace = capture_torch(model, (ids, extra), loss_fn=lambda o, t: (o ** 2).sum(), target=None)
    assert torch.equal(extra.grad, torch.full((3, 4), 5.0))
    head = trace.op("head").tensors
    np.testing.assert_allclose(head["grad_weight"], head["grad_output"].T.astype(float) @
                               head["input"].astype(float), rtol=1e-12)


def test_functional_ops_never_take_a_module_name_and_odd_calls_warn():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.matmul, self.conv = nn.Linear(4, 4), nn.Conv2d(1, 1, 3)

        def forward(self, x):
            y = x @ x.T
            self.conv(torch.ones(1, 5, 5))              # unbatched: not recorded
            return self.matmul(y)

    with pytest.warns(UserWarning, match="unbatched"):
        trace = capture_torch(Odd(), torch.randn(4, 4))
    assert [(o.name, o.kind) for o in trace.ops] == [("matmul_2", "matmul"),
                                                     ("matmul", "linear")]


class _ResNetish(nn.Module):
    """Stem conv, batch norm, max pool, a residual block, global average pool, classifier."""
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.pool, self.gap, self.fc = nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), \
            nn.Linear(8, 5)

    def forward(self, x):
        h = self.pool(F.relu(self.bn(self.stem(x))))
        h = F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(h))))) + h)
        return self.fc(torch.flatten(self.gap(h), 1))


class _Block(nn.Module):
    """A pre-norm transformer block: LayerNorm, heads by split or unbind and view/transpose,
    SDPA (causal or with a boolean mask), residual adds, a SwiGLU MLP (chunk, silu, mul), the
    first token's row by indexing."""
    def __init__(self, causal: bool):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(16), nn.LayerNorm(16)
        self.qkv, self.out = nn.Linear(16, 48), nn.Linear(16, 16)
        self.up, self.down, self.head = nn.Linear(16, 64), nn.Linear(32, 16), nn.Linear(16, 3)
        self.causal = causal

    def forward(self, x, mask):
        b, n, _ = x.shape
        qkv = self.qkv(self.ln1(x))
        qkv = qkv.view(b, n, 3, 16).unbind(2) if self.causal else qkv.split(16, dim=-1)
        q, k, v = (t.view(b, n, 4, 4).transpose(1, 2) for t in qkv)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                           attn_mask=None if self.causal else mask)
        x = x + self.out(a.transpose(1, 2).reshape(b, n, 16))
        gate, up = self.up(self.ln2(x)).chunk(2, -1)
        x = x + self.down(F.silu(gate) * up)
        return self.head(x[:, 0])


def test_a_cnn_links_through_norms_pools_and_residuals():
    torch.manual_seed(4)
    model = _ResNetish()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        labels = model(x).argmax(-1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_torch(model, x, labels=labels)
    assert [(o.name, o.inputs_from) for o in trace.ops] == [
        ("stem", []), ("batch_norm", ["stem"]), ("relu", ["batch_norm"]),
        ("pool2d", ["relu"]), ("c1", ["pool2d"]), ("batch_norm_2", ["c1"]),
        ("relu_2", ["batch_norm_2"]), ("c2", ["relu_2"]), ("batch_norm_3", ["c2"]),
        ("add", ["batch_norm_3", "pool2d"]), ("relu_3", ["add"]),
        ("adaptive_avg_pool2d", ["relu_3"]), ("flatten", ["adaptive_avg_pool2d"]),
        ("fc", ["flatten"])]
    assert trace.op("pool2d").attrs == {"mode": "max", "kernel": [3, 3], "stride": [2, 2],
                                        "padding": [1, 1], "dilation": [1, 1],
                                        "ceil_mode": False}
    df = replay(trace, [_exact_fp32()], "propagated")
    out = df[df.role == "output"]
    assert len(out) == 14 and (out.sqnr_db > 120).all()
    assert df[df.role == "task"].accuracy.item() == 1.0


@pytest.mark.parametrize("causal", [True, False])
def test_a_transformer_block_links_end_to_end_and_round_trips(causal, tmp_path):
    torch.manual_seed(5)
    model, x = _Block(causal).eval(), torch.randn(3, 6, 16)
    mask = torch.rand(3, 1, 6, 6) > 0.3
    mask[..., 0] = True                       # every query sees the first key
    with torch.no_grad():
        labels = model(x, mask).argmax(-1).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            trace = capture_torch(model, (x, mask), labels=labels)
    kinds = [o.kind for o in trace.ops]
    assert kinds.count("layer_norm") == 1     # ln1 reads the input: nothing to link
    assert {"add", "mul", "softmax", "silu", "index", "matmul", "permute"} <= set(kinds)
    assert trace.op("mul_2").inputs_from == ["silu", "index_5"]     # gate * up
    assert [o.name for o in trace.ops if not o.inputs_from] == ["qkv"]
    scores = trace.op("add").tensors["other"]             # the mask, added to the scores
    want = torch.ones(6, 6).tril() if causal else mask.float()
    assert np.array_equal(scores == 0, np.broadcast_to(want.numpy() == 1, scores.shape))
    # what SDPA computes inside its kernel is fused (a storage format leaves it), its output not
    assert [o.kind for o in trace.ops if o.attrs.get("fused")] == [
        "permute", "attention_scores", "mul", "add", "softmax"]
    assert trace.ops[[o.kind for o in trace.ops].index("softmax") + 1].attrs == {}
    # the mask capture made: built by a causal kernel (never read), or the model's booleans
    # (one byte each, 20 pJ a bit from DRAM), whatever the storage format
    assert trace.op("add").attrs == {"fused": True, "mask": "causal" if causal else "bool"}
    row = replay(trace, Config(storage="fp8_e4m3"), "propagated").query(
        "op == 'add' and role == 'output'").iloc[0]
    assert row.memory_pj == (0 if causal else 3 * 6 * 6 * 8 * 20.0)
    path = save_trace(trace, tmp_path / "t")
    cfg = [_exact_fp32(), Config("bf16", "bf16", "bf16->fp32", name="bf16"),
           Config("bf16", "bf16", "bf16->fp32", storage="fp8_e4m3", name="store")]
    df, loaded = (replay(t, cfg, "propagated") for t in (trace, load_trace(path)))
    pd_testing.assert_frame_equal(df, loaded)             # fused and the rest round trip
    out = df[(df.role == "output") & (df.config == "fp32")]
    assert (out.sqnr_db > 110).all() and "error" not in df
    assert df[(df.role == "task") & (df.config == "fp32")].accuracy.item() == 1.0


def test_a_parameter_used_beside_a_recorded_value_stays_a_constant():
    """``p[argmax(fc(x))]`` and ``h[0] = fc(x)[0]`` taint only what they write: the parameter
    p read later, and h before the write, are still constants (a regression: every call named
    like ``__getitem__`` was taken for an in-place one and tainted its first operand)."""
    class P(nn.Module):
        def __init__(self):
            super().__init__()
            self.p, self.fc = nn.Parameter(torch.randn(5, 4)), nn.Linear(5, 5)

        def forward(self, x):
            r = self.fc(x)
            a = self.p[r.argmax(0)]
            h = torch.zeros(4, 5)
            h[0] = r[0]
            return a, F.relu(self.p), F.relu(h)

    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        trace = capture_torch(P(), torch.randn(4, 5))
    # the relu of p is not recorded (p depends on no recorded op); the relu of h reads fc's
    # output through setitem, which is not recorded; the model's first output, a, is made by
    # no recorded op (argmax is not one), so replay scores the last op as the model's
    messages = [str(w.message) for w in caught]
    assert [m.split(":")[0] for m in messages[1:]] == ["relu (after setitem)"]
    assert messages[0].startswith("the model's output is not the output of a recorded op, so "
                                  "replay scores the last recorded op's, relu,")
    assert [o.name for o in trace.ops] == ["fc", "index", "relu"]
    assert "output" not in trace.meta and trace.output_op.name == "relu"


def test_reversed_arithmetic_negation_and_shape_only_calls_link():
    """x - h, x / h, 2 - h, 1 / h and -h link h (the ``reverse`` attr keeps the linked operand
    first); h.add_(h) records both operands as they were; zeros_like(h) owes h only its shape;
    swapaxes, relu_ and numpy-integer slices are recorded.  Exact fp32 replay reproduces
    torch's values."""
    class R(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = self.fc(x)
            a = (x - h) + (x / (h * h + 2)) + (2 - h) + 1 / (h * h + 1) + (-h)
            a = a + torch.zeros_like(h)
            a.add_(a)
            a = a.swapaxes(0, 1)[np.int64(1):].swapaxes(0, 1)
            return self.head(torch.relu_(torch.roll(torch.cat([a, a[:, :1]], 1), 1, 1)[:, :6]))

    torch.manual_seed(9)
    model, x = R(), torch.randn(4, 6)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = capture_torch(model, x)
    # roll is not recorded: the slice after it is the one op named
    assert [str(w.message).split(":")[0] for w in caught] == ["index_3 (after roll)"]
    ops = {o.name: o for o in trace.ops}
    assert ops["sub"].attrs == {"reverse": True} and ops["sub"].inputs_from == ["fc"]
    assert ops["sub_2"].attrs == {"reverse": True} and ops["sub_2"].tensors["other"] == 2
    assert ops["div"].attrs == ops["div_2"].attrs == {"reverse": True}   # x / ..., 1 / ...
    assert ops["mul_3"].tensors["other"] == -1 and ops["mul_3"].inputs_from == ["fc"]
    assert not any(o.kind == "add" and not o.inputs_from for o in trace.ops)
    twice = [o for o in trace.ops if o.kind == "add"][-1]            # a.add_(a)
    np.testing.assert_array_equal(twice.tensors["input"], twice.tensors["other"])
    assert [o.kind for o in trace.ops].count("permute") == 2 and ops["relu"].inputs_from
    df = replay(trace, [_exact_fp32()], "propagated")
    linked = df[(df.role == "output") & ~df.op.isin(["index_3", "relu", "head"])]
    assert (linked.sqnr_db > 120).all() and len(linked) > 12


def test_sdpa_rows_with_every_key_masked_and_links_it_cannot_make():
    """A query row whose keys are all masked gets zeros from SDPA (not NaN): the softmax op
    is 'safe' and replay agrees.  A mask that a recorded op computes is linked; keys that
    depend on recorded ops beside a constant query cannot be linked, and capture says so."""
    class A(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.o = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
            self.bias = nn.Linear(8, 5)

        def forward(self, x, mask, raw):
            q = self.q(x)
            a = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
            b = F.scaled_dot_product_attention(q, q, q, attn_mask=self.bias(x)[..., :5])
            c = F.scaled_dot_product_attention(raw, self.k(x), self.k(x))
            return self.o(a + b + c)

    torch.manual_seed(10)
    x, raw = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[2] = False
    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        trace = capture_torch(A(), (x, mask, raw))
    assert [str(w.message).split(":")[0] for w in caught] == ["attention_scores_3"]
    soft = [o for o in trace.ops if o.kind == "softmax"]
    assert all(o.attrs == {"safe": True, "fused": True} for o in soft)
    assert np.array_equal(soft[0].tensors["output"][:, 2], np.zeros((2, 5)))
    assert trace.op("add_2").inputs_from == ["mul_2", "index"]       # the mask from bias(x)
    df = replay(trace, [_exact_fp32()], "propagated")
    out = df[(df.role == "output") & (df.op != "attention_scores_3")]
    assert np.isfinite(out.sqnr_db).all() and (out.sqnr_db > 120).all()


def test_functional_macs_are_recorded_and_a_head_capture_misses_is_named():
    """F.conv1d, F.conv2d, torch.addmm (GPT-2's Conv1D) and F.linear (a head tied to an
    embedding) outside any hooked module are recorded and linked, each once (a Linear
    module's own F.linear is not recorded twice); exact fp32 replay reproduces torch.  A head
    computed by a two-operand einsum by a weight is a linear; by a three-operand one it is not
    recorded, and with labels capture says replay would score the wrong tensor."""
    class Fn(nn.Module):
        def __init__(self, einsum: int):
            super().__init__()
            self.w1, self.w2 = nn.Parameter(torch.randn(4, 3, 3)), nn.Parameter(
                torch.randn(4, 4, 3, 3))
            self.c_w, self.c_b = nn.Parameter(torch.randn(4, 6)), nn.Parameter(torch.randn(6))
            self.lin, self.emb = nn.Linear(6, 6), nn.Embedding(5, 6)
            self.einsum = einsum

        def forward(self, x):                                   # x (N, 3, 8)
            h = F.conv1d(x, self.w1, padding=1)                 # (N, 4, 8)
            h = F.conv2d(h.unsqueeze(2), self.w2, padding="same").squeeze(2)
            h = torch.addmm(self.c_b, h.mean(-1), self.c_w)     # (N, 6)
            h = self.lin(h)
            if self.einsum == 2:
                return torch.einsum("nd,vd->nv", h, self.emb.weight)
            if self.einsum == 3:
                return torch.einsum("nd,vd,d->nv", h, self.emb.weight, torch.ones(6))
            return F.linear(h, self.emb.weight)

    torch.manual_seed(12)
    x = torch.randn(3, 3, 8)
    model = Fn(0)
    with torch.no_grad():
        labels = model(x).argmax(-1).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            trace = capture_torch(model, x, labels=labels)
    assert [(o.name, o.kind, o.inputs_from) for o in trace.ops] == [
        ("conv2d", "conv2d", []), ("conv2d_2", "conv2d", ["conv2d"]),
        ("mean", "mean", ["conv2d_2"]), ("linear", "linear", ["mean"]),
        ("lin", "linear", ["linear"]), ("linear_2", "linear", ["lin"])]
    assert trace.op("conv2d_2").attrs["padding"] == [1, 1]
    np.testing.assert_array_equal(trace.op("linear").tensors["weight"], model.c_w.detach().T)
    df = replay(trace, [_exact_fp32()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all()
    assert df[df.role == "task"].accuracy.item() == 1.0
    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        capture_torch(Fn(3), x, labels=labels)
    assert [str(w.message).split(":")[0] for w in caught] == [
        "not recorded, though they multiply-accumulate", "the model's output is not the output "
        "of a recorded op, so replay scores the last recorded op's, lin, as the model's "
        "(its SQNR, and its accuracy against labels)"]
    assert "einsum 'nd,vd,d->nv'" in str(caught[0].message)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        tied = Fn(2)
        head = capture_torch(tied, x, labels=labels).ops[-1]
    assert (head.name, head.kind, head.inputs_from) == ("einsum", "linear", ["lin"])
    np.testing.assert_array_equal(head.tensors["weight"], tied.emb.weight.detach())


def test_linear_subclasses_dynamic_weights_and_errors_inside_modules():
    """A Linear with a forward of its own (LoRA: W x + B A x) is recorded through its F.linear
    calls, exactly (the hook recorded W with the module's output: 0 dB); F.linear whose weight
    is an activation is named in the warning (a weight is never linked); an in-place add on an
    unlinked value names that value's cause; a module whose forward raises does not stop later
    functional calls being recorded; addmm with a (1, N) bias is a linear layer."""
    class LoRA(nn.Linear):
        def __init__(self):
            super().__init__(6, 6)
            self.a, self.b = nn.Parameter(torch.randn(2, 6)), nn.Parameter(torch.randn(6, 2))

        def forward(self, x):
            return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.a), self.b)

    class Boom(nn.Linear):                                # a stock forward, fed a bad input
        pass

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lora, self.fc, self.boom = LoRA(), nn.Linear(6, 6), Boom(3, 3)
            self.w, self.bias = nn.Parameter(torch.randn(6, 6)), nn.Parameter(torch.randn(1, 6))

        def forward(self, x):
            try:
                self.boom(x)                              # 6 features into 3: raises
            except RuntimeError:
                pass
            h = torch.addmm(self.bias, self.lora(x), self.w)
            d = F.linear(h, self.fc(x))                   # weight: an activation
            m = torch.roll(h, 1, 0)
            m.add_(1.0)
            return d, self.fc(m)

    torch.manual_seed(13)
    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        trace = capture_torch(M(), torch.randn(6, 6))
    assert [str(w.message).split(":")[0] for w in caught] == ["linear_2, add_2 (after roll)"]
    # the functional calls inside lora take its name; those of the model itself, their kind's
    assert [(o.name, o.inputs_from) for o in trace.ops] == [
        ("lora", []), ("lora_2", []), ("lora_3", ["lora_2"]),
        ("add", ["lora", "lora_3"]), ("linear", ["add"]), ("fc", []),
        ("linear_2", ["linear"]), ("add_2", []), ("fc_2", ["add_2"])]
    assert trace.op("linear").tensors["bias"].shape == (6,)      # addmm's (1, N) bias
    df = replay(trace, [_exact_fp32()], "propagated")
    ok = df[(df.role == "output") & df.op.isin(["lora", "lora_2", "lora_3", "add", "linear"])]
    assert len(ok) == 5 and (ok.sqnr_db > 120).all()


class _RMS(nn.Module):
    """Llama's RMSNorm as HF writes it: pow, mean, add eps, rsqrt, mul, then the gain."""
    def __init__(self, d: int):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.rand(d) + 0.5), 1e-6

    def forward(self, h):
        v = h.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(v + self.eps))


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class _Llamaish(nn.Module):
    """A class token by torch.cat, RMSNorm written out and nn.RMSNorm, rotary embeddings,
    scores through ``k.mT``, a relu6 MLP, and a head over torch.stack, movedim and ``.T``."""
    def __init__(self, d=16, heads=2):
        super().__init__()
        self.n1, self.n2 = _RMS(d), nn.RMSNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down, self.heads = nn.Linear(d, 32), nn.Linear(32, d), heads
        self.cls, self.head = nn.Parameter(torch.randn(1, 1, d)), nn.Linear(2, 3)
        self.embed = nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(x).relu()], dim=1)
        q, k, v = self.qkv(self.n1(x)).chunk(3, -1)
        q, k, v = (t.reshape(b, n + 1, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        pos = torch.arange(n + 1)[:, None] * torch.ones(q.shape[-1] // 2)
        cos, sin = torch.cat([pos.cos()] * 2, -1), torch.cat([pos.sin()] * 2, -1)
        q, k = (t * cos + _rotate_half(t) * sin for t in (q, k))
        a = (q @ k.mT / 3).softmax(-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, n + 1, d))
        x = x + self.down(F.relu6(self.up(self.n2(x))))
        pooled = torch.stack([x[:, 0], x[:, 1:].mean(1)], 1).movedim(1, 2)   # (b, d, 2)
        return self.head(pooled.mean(1).T.T)                                # (b, 2) -> 3


def test_rms_norm_rotary_concat_and_stack_link_end_to_end(tmp_path):
    """Every op after the input links: cat with a constant class token (a concat whose
    constant part is read from its captured output), the RMSNorm written out (pow, mean, add,
    rsqrt, mul) and nn.RMSNorm (``rms_norm``, with the eps torch uses when given none),
    rotary's rotate_half (index, negation, cat), k.mT, relu6 (a clamp), stack, movedim and .T.
    Exact fp32 propagated replay lands within fp32 rounding of torch's values, on disk too."""
    torch.manual_seed(14)
    model, x = _Llamaish().eval(), torch.randn(3, 5, 16)
    with torch.no_grad():
        labels = model(x).argmax(-1).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            trace = capture_torch(model, x, labels=labels)
    assert [o.name for o in trace.ops if not o.inputs_from] == ["embed"]
    kinds = [o.kind for o in trace.ops]
    assert {"concat", "pow", "rsqrt", "rms_norm", "clamp"} <= set(kinds)
    # cat, rotate_half for q and k, stack; q, k, v heads, k.mT, a's heads back, movedim, .T .T
    assert kinds.count("concat") == 4 and kinds.count("permute") == 8
    assert trace.op("concat").attrs == {"dim": 1, "sizes": [1, 5], "linked": [1]}
    assert trace.op("concat").inputs_from == ["relu"] and set(trace.op("concat").tensors) == {
        "output"}
    assert trace.op("concat_4").attrs == {"dim": 1, "sizes": [1, 1], "linked": [0, 1]}
    assert trace.op("clamp").attrs == {"min": 0.0, "max": 6.0}
    assert trace.op("rms_norm").attrs == {"normalized_shape": [16],
                                          "eps": torch.finfo(torch.float32).eps}
    path = save_trace(trace, tmp_path / "t")
    df, loaded = (replay(t, [_exact_fp32()], "propagated") for t in (trace, load_trace(path)))
    pd_testing.assert_frame_equal(df, loaded)
    assert (df[df.role == "output"].sqnr_db > 120).all() and "error" not in df
    assert df[df.role == "task"].accuracy.item() == 1.0


def test_rms_norm_eps_is_torchs_and_a_concat_part_without_a_link_is_named():
    """F.rms_norm with eps=None uses the input dtype's epsilon: on inputs whose mean square is
    below it the recorded eps decides the output, and torch given that eps explicitly agrees
    bit for bit.  A tainted part of a cat that capture cannot link is named in the warning;
    the linked part still links."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(4, 4), nn.Linear(5, 2)

        def forward(self, x):
            h = F.rms_norm(self.fc(x) * 1e-5, (4,))
            return self.head(torch.cat([h, h.amax(-1, keepdim=True)], -1))

    torch.manual_seed(15)
    model, x = M(), torch.randn(6, 4)
    with torch.no_grad(), pytest.warns(UserWarning, match=r"^concat \(after amax\): an input"):
        trace = capture_torch(model, x)
    op = trace.op("rms_norm")
    eps = op.attrs["eps"]
    got = F.rms_norm(torch.from_numpy(op.tensors["input"]), (4,), eps=eps).numpy()
    assert eps == torch.finfo(torch.float32).eps and np.array_equal(got, op.tensors["output"])
    assert np.abs(op.tensors["output"]).max() < 0.5       # eps dominates: far from unit RMS
    assert trace.op("concat").inputs_from == ["rms_norm"]
    assert trace.op("concat").attrs["linked"] == [0]
    df = replay(trace, [_exact_fp32()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all()


def test_grouped_query_keys_without_a_link_are_named():
    """Keys that depend on recorded ops through an unrecorded call reach SDPA's expand op
    without a link: the expand is named (the permute after it is linked to the expand, so
    naming only unlinked permutes would miss it)."""
    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x):
            q = self.q(x).view(1, 4, 3, 2)
            k = self.k(x).sin().view(1, 2, 3, 2)
            return F.scaled_dot_product_attention(q, k, k, enable_gqa=True)

    torch.manual_seed(16)
    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        capture_torch(G(), torch.randn(3, 8))
    assert [str(w.message).split(":")[0] for w in caught] == [
        "expand (after sin), expand_2 (after sin)"]


@pytest.mark.parametrize("which", ["llama-sdpa", "llama-eager", "vit", "gpt2"])
def test_hugging_face_llama_vit_and_gpt2_link_end_to_end(which):
    """Tiny randomly initialised HF models (transformers is installed with the MiniLM extra):
    Llama with grouped-query attention, rotary embeddings, RMSNorm and its KV cache's first
    torch.cat (onto a 1-D empty tensor), in both attention implementations, and ViT with its
    class token.  Capture warns of nothing; the only ops without a link read values that
    depend on no recorded op (the first layer's projections of the embeddings, the patch
    conv); exact fp32 propagated replay lands within fp32 rounding of torch's values.  GPT-2's
    Conv1D layers (torch.addmm calls) take their modules' names."""
    tf = pytest.importorskip("transformers", reason="transformers comes with the MiniLM extra")
    torch.manual_seed(17)
    if which == "vit":
        model = tf.ViTForImageClassification(tf.ViTConfig(
            image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, num_labels=5))
        x, first = torch.randn(2, 3, 16, 16), ["vit.embeddings.patch_embeddings.projection"]
    elif which == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=64, n_positions=16, n_embd=32,
                                                 n_layer=2, n_head=4))
        x, first = torch.randint(0, 64, (2, 7)), ["transformer.h.0.attn.c_attn"]
    else:
        model = tf.LlamaForCausalLM(tf.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
            attn_implementation=which.split("-")[1]))
        x = torch.randint(0, 64, (2, 7))
        first = [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        trace = capture_torch(model.eval(), x)
    assert [o.name for o in trace.ops if not o.inputs_from] == first
    kinds = {o.kind for o in trace.ops}
    want = {"vit": {"concat", "layer_norm", "gelu"},
            "gpt2": {"layer_norm", "tanh", "pow"}}.get(which, {"concat", "pow", "rsqrt", "expand"})
    assert want <= kinds
    if which == "gpt2":
        assert {"transformer.h.1.mlp.c_fc", "transformer.h.1.attn.c_proj"} <= {
            o.name for o in trace.ops}
    df = replay(trace, [_exact_fp32()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all() and "error" not in df


def _warned(model, *inputs):
    """Capture ``model`` under no_grad; the op names its warnings start with."""
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = capture_torch(model, inputs)
    return trace, [str(w.message).split(":")[0] for w in caught]


class _Fn(nn.Module):
    """fc, then ``fn(self, h)``, then head (of ``out`` features in)."""
    def __init__(self, fn, out=4):
        super().__init__()
        self.fc, self.g, self.head, self.fn = nn.Linear(4, 4), nn.Linear(4, 4), \
            nn.Linear(out, 2), fn

    def forward(self, x):
        return self.head(self.fn(self, self.fc(x)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_rms_norm_without_eps_uses_torchs_epsilon_for_each_dtype(dtype):
    """torch computes half-precision RMSNorm in float32 and takes float32's epsilon; float64's
    own.  On inputs whose mean square is far below it, torch given the recorded eps reproduces
    the captured output bit for bit."""
    torch.manual_seed(18)
    model = nn.Sequential(nn.Linear(8, 8), nn.RMSNorm(8), nn.Linear(8, 3)).to(dtype).eval()
    x = (torch.randn(6, 8) * 1e-3).to(dtype)
    trace, warned = _warned(model, x)
    op = trace.op("rms_norm")
    want = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    assert op.attrs["eps"] == want and warned == []
    h = model[0](x).detach()
    got = F.rms_norm(h, (8,), model[1].weight.detach(), eps=op.attrs["eps"])
    assert torch.equal(got, model[1](h).detach())


def test_review_cases_hardtanh_defaults_pow_halves_numpy_axes_and_unrecordable_calls():
    """F.hardtanh_ (a builtin) gets its default bounds; x ** 0.5 and x ** -0.5 are sqrt and
    rsqrt, whose -0 and -inf results are torch's; numpy-integer axes work; a pow by NaN and a
    clamp to NaN are left out with a warning; torch.exp(h, out=h) is not recorded with its
    output as its input; a norm weight computed from recorded ops is named."""
    torch.manual_seed(19)
    x = torch.randn(5, 4)
    trace, warned = _warned(_Fn(lambda s, h: F.hardtanh_(h * 3) + F.hardtanh_(h, -0.5)), x)
    assert [o.attrs for o in trace.ops if o.kind == "clamp"] == [
        {"min": -1.0, "max": 1.0}, {"min": -0.5, "max": 1.0}] and warned == []
    df = replay(trace, [_exact_fp32()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all()

    special = torch.tensor([[0.0, -0.0, float("inf"), -float("inf")]])

    def halves(s, h):
        v = special * (h.abs() + 1)                       # -0 and -inf, depending on h
        return v ** 0.5 + v ** -0.5 + h.abs() ** 0.5

    trace, warned = _warned(_Fn(halves), x)
    kinds = [o.kind for o in trace.ops]
    assert kinds.count("sqrt") == 2 and kinds.count("rsqrt") == 1 and "pow" not in kinds
    assert np.signbit(trace.op("sqrt").tensors["input"][:, 1]).all()
    for o in trace.ops:
        if o.kind in ("sqrt", "rsqrt"):
            got = graph_ops.evaluate(o.kind, {"input": o.tensors["input"].astype(np.float64)},
                                     None, {})
            want = o.tensors["output"].astype(np.float64)
            normal = np.isfinite(want) & (want != 0)      # float32 against float64 there
            np.testing.assert_allclose(got[normal], want[normal], rtol=2 ** -23)
            assert np.array_equal(got[~normal], want[~normal], equal_nan=True)
            real = ~np.isnan(want)                         # a NaN's sign means nothing
            assert np.array_equal(np.signbit(got[real]), np.signbit(want[real]))

    trace, warned = _warned(_Fn(lambda s, h: torch.cat([h, h], np.int64(1)).movedim(
        np.int64(0), np.int64(1)).T, out=8), x)
    assert [o.kind for o in trace.ops] == ["linear", "concat", "permute", "permute", "linear"]
    assert warned == []

    trace, warned = _warned(_Fn(lambda s, h: h.pow(float("nan")) + h.clamp(min=float("nan"))),
                            x)
    assert warned == ["pow", "clamp", "add (after clamp, pow)"]
    assert "pow" not in [o.kind for o in trace.ops]

    def exp_out(s, h):
        h = h * 1.0
        return torch.exp(h, out=h)
    trace, warned = _warned(_Fn(exp_out), x)
    assert "exp" not in [o.kind for o in trace.ops] and warned == ["head (after exp)"]

    trace, warned = _warned(_Fn(lambda s, h: F.rms_norm(h, (4,), s.g(h).mean(0), 1e-6)), x)
    assert warned == ["rms_norm"]                   # a weight is never linked

    trace, warned = _warned(_Fn(lambda s, h: torch.cat([torch.tensor([]), torch.roll(h, 1, 0)],
                                                       -1)), x)
    assert warned == ["head (after roll)"]


def test_calls_on_values_no_recorded_op_made_are_not_recorded():
    """A flatten of a bool mask, a softmax of the model's input or an erf of a parameter
    depend on no recorded op: nothing to link, so nothing recorded and no warning downstream
    (the flattened mask made every later op look unlinked); torch.erf of a linked value links."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.p = nn.Linear(4, 4), nn.Parameter(torch.randn(4))

        def forward(self, x, m):
            mask = torch.where(torch.flatten(m).reshape(3, 4), 0.0, -1e4)
            h = self.fc(torch.softmax(x, -1)) + mask + torch.erf(self.p)
            return torch.special.erf(torch.erf(h))

    x = torch.randn(3, 4)
    trace, warned = _warned(M(), x, x > 0)
    assert warned == [] and [(o.kind, o.inputs_from) for o in trace.ops] == [
        ("linear", []), ("add", ["fc"]), ("add", ["add"]), ("erf", ["add_2"]),
        ("erf", ["erf"])]


class _Lin(nn.Module):
    """A module of its own that calls F.linear (``times`` times)."""
    def __init__(self, times=1):
        super().__init__()
        self.w, self.times = nn.Parameter(torch.randn(4, 4)), times

    def forward(self, x):
        for _ in range(self.times):
            x = F.linear(x, self.w)
        return x


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_module_scopes_survive_script_modules_raising_hooks_and_meeting_names():
    """A TorchScript submodule (which takes no hooks) is left alone and capture's hooks all go
    afterwards; a user's pre-hook that raises (caught by the parent) does not unbalance the
    scope a functional MAC is named by; a repeat call never takes another module's name."""
    class T(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.fc = _Lin(), nn.Linear(4, 4)
            self.s = torch.jit.script(nn.Sequential(nn.ReLU()))

        def forward(self, x):
            return self.s(self.fc(self.a(x)))

    model, x = T(), torch.randn(2, 4)
    trace, warned = _warned(model, x)
    assert [o.name for o in trace.ops] == ["a", "fc"]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in (model.a, model.fc))

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.child, self.w = _Lin(), nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            try:
                x = self.child(x)
            except RuntimeError:
                pass
            return F.linear(x, self.w)

    top = nn.Sequential(Parent())

    def refuse(m, args):
        raise RuntimeError("no")
    top[0].child.register_forward_pre_hook(refuse)
    trace, warned = _warned(top, x)
    assert [o.name for o in trace.ops] == ["0"]

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.a_2 = _Lin(times=2), _Lin()

        def forward(self, x):
            return self.a_2(self.a(x))

    trace, warned = _warned(Two(), x)
    assert [o.name for o in trace.ops] == ["a", "a_3", "a_2"]


def test_a_bare_linear_model_is_hooked_with_its_gradients():
    """The model itself a Linear: recorded by its hooks (named for its kind), with autograd's
    gradients, not as a functional call without them."""
    torch.manual_seed(20)
    model, x = nn.Linear(4, 3), torch.randn(5, 4, requires_grad=True)
    trace = capture_torch(model, x, loss_fn=lambda o, t: (o - t).pow(2).sum(),
                          target=torch.zeros(5, 3))
    op, = trace.ops
    assert op.name == "linear" and {"grad_output", "grad_input", "grad_weight"} <= set(op.tensors)
    y = model(x)
    np.testing.assert_allclose(op.tensors["grad_output"], (2 * y).detach().numpy(), rtol=1e-6)


EINSUMS = ["bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd", "ij,jk", "...ij,...jk->...ik", "bij,jk->bki",
           "ij,ij->", "bn,dn->bd", "abc,cb->a", "b i j , b j k -> b k i"]


@pytest.mark.parametrize("eq", EINSUMS)
@pytest.mark.parametrize("swap", [False, True])
def test_an_einsum_plan_is_the_einsum(eq, swap):
    """Each operand permuted and reshaped as the plan says, multiplied (the second first where
    swapped), then reshaped and permuted to the output: torch.einsum's result (float64, to
    rounding)."""
    shapes = {"bhqd,bhkd->bhqk": ((2, 3, 4, 5), (2, 3, 6, 5)),
              "bhqk,bhkd->bhqd": ((2, 3, 4, 6), (2, 3, 6, 5)),
              "ij,jk": ((3, 4), (4, 5)), "...ij,...jk->...ik": ((2, 3, 4), (4, 5)),
              "bij,jk->bki": ((2, 3, 4), (4, 5)),
              "ij,ij->": ((3, 4), (3, 4)), "bn,dn->bd": ((3, 4), (5, 4)),
              "abc,cb->a": ((2, 3, 4), (4, 3)), "b i j , b j k -> b k i": ((2, 3, 4), (2, 4, 5))}
    sa, sb = shapes[eq]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(sa, generator=g, dtype=torch.float64), torch.randn(
        sb, generator=g, dtype=torch.float64)
    p = einsum.plan(eq, sa, sb, swap)
    first, second = (y, x) if swap else (x, y)
    a = first.permute(p.a_perm).reshape(p.a_shape)
    b = second.permute(p.b_perm).reshape(p.b_shape)
    got = (a @ b).reshape(p.middle).permute(p.out_perm)
    torch.testing.assert_close(got, torch.einsum(eq, x, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eq, sa, sb", [
    ("ii->i", (3, 3), (3,)), ("ij,jk,kl->il", (3, 3), (3, 3)), ("ii,ij->j", (3, 3), (3, 3)),
    ("ij,jk->i", (3, 3), (3, 3)), ("ij,k->i", (3, 3), (3,)),
    ("i,j->ij", (3,), (4,)), ("bij,->bij", (2, 3, 4), ()),     # nothing to accumulate
    ("bij,bjk->bik", (2, 3, 4), (1, 4, 5))])                    # a batch that broadcasts
def test_einsums_that_are_not_one_matmul_have_no_plan(eq, sa, sb):
    assert einsum.plan(eq, sa, sb) is None


class _EinsumAttention(torch.nn.Module):
    """Attention written with einsum, a weight applied as ``W h`` to a linear's output (a
    constant first operand, which capture puts second so that h links)."""

    def __init__(self):
        super().__init__()
        self.q, self.v, self.h = (torch.nn.Linear(8, 8) for _ in range(3))
        self.wk = torch.nn.Parameter(torch.randn(8, 8) / 3)

    def forward(self, x):
        q, v = self.q(x).unflatten(-1, (2, 4)), self.v(x).unflatten(-1, (2, 4))
        k = torch.einsum("oi,bti->bto", self.wk, self.h(x)).unflatten(-1, (2, 4))
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) / 2
        return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v).flatten(-2)


def test_einsum_attention_links_end_to_end():
    torch.manual_seed(3)
    model, x = _EinsumAttention().eval(), torch.randn(2, 5, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")                   # every op linked: no warning
        trace = capture_torch(model, (x,))
    mms = [o for o in trace.ops if o.name.startswith("einsum")]
    assert [(o.name, o.kind) for o in mms] == [("einsum", "linear"), ("einsum_2", "matmul"),
                                               ("einsum_3", "matmul")]
    assert mms[0].inputs_from == ["h"]          # no reshape recorded: replay reshapes links
    assert [o.kind for o in trace.ops].count("flatten") == 1       # the model's own .flatten
    assert mms[0].shape("input") == (10, 8)      # W h, a weight: a linear by W
    np.testing.assert_array_equal(mms[0].tensors["weight"], model.wk.detach())
    assert [o.shape("a") for o in mms[1:]] == [(4, 5, 4), (4, 5, 5)]
    assert [o.shape("b") for o in mms[1:]] == [(4, 4, 5), (4, 5, 4)]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.array_equal(trace.ops[-1].tensors["output"], want)
    df = replay(trace, [_exact_fp32()], "propagated")
    out = df[df.role == "output"]
    assert "error" not in df and (out.sqnr_db > 110).all()


def test_an_einsum_that_is_no_matmul_is_not_recorded_and_its_reader_warns():
    class Diag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.out = torch.nn.Linear(4, 4), torch.nn.Linear(2, 2)

        def forward(self, x):                    # the diagonal of each 2x2: no matmul
            return self.out(torch.einsum("bii->bi", self.fc(x).unflatten(-1, (2, 2))))

    with pytest.warns(UserWarning, match=r"out \(after einsum\)"):
        trace = capture_torch(Diag().eval(), (torch.randn(3, 4),))
    assert [o.name for o in trace.ops] == ["fc", "out"] and trace.op("out").inputs_from == []


def test_an_einsum_fuses_its_epilogue_and_an_outer_product_of_constants_is_no_mac():
    """relu(einsum(h, W)): the ReLU reads the einsum's matmul directly (no reshape recorded),
    so fusion "epilogue" keeps the product on chip.  The rotary table ``einsum("i,j->ij", t,
    inv_freq)`` multiplies without accumulating: no MAC is recorded, and with constant operands
    nothing is (no warning either: its reader's input depends on no recorded op)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.w = nn.Linear(16, 16), nn.Parameter(torch.randn(16, 8))
            self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, 8, 2) / 8))

        def forward(self, x):                                    # x (4, 8, 16)
            y = torch.relu(torch.einsum("bij,jk->bik", self.fc(x), self.w))
            freqs = torch.einsum("i,j->ij", torch.arange(8.0), self.inv_freq)
            return y * torch.cat((freqs, freqs), -1).cos()

    torch.manual_seed(4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_torch(M().eval(), (torch.randn(4, 8, 16),))
    assert [(o.name, o.kind, o.inputs_from) for o in trace.ops] == [
        ("fc", "linear", []), ("einsum", "linear", ["fc"]), ("relu", "relu", ["einsum"]),
        ("mul", "mul", ["relu"])]
    cfgs = [Config(mac={"accumulator": "exact"}, fusion=f, name=f) for f in ("none", "epilogue")]
    out = replay(trace, cfgs, "propagated").query("role == 'output'").set_index(["op", "config"])
    n = 4 * 8 * 8
    assert out.loc[("relu", "none"), "memory_pj"] - out.loc[("relu", "epilogue"), "memory_pj"] \
        == pytest.approx(2 * n * 32 * 20.0)   # nor reads the product nor writes (the mul does)


def test_a_weight_multiplied_by_matmul_or_einsum_is_a_linear():
    """``x @ W``, ``x @ W.T`` and ``einsum("btd,de->bte", x, W)`` by a 2-D parameter are
    linear layers (weight (out, in), as ONNX records a MatMul by a constant), so a config's
    weight format quantizes W and its activation format x.  ``W @ h``, a weight first, is
    recorded as (h^T W^T)^T: a permute of h, a linear by W and a permute back, so h links; a
    constant first that is no parameter (a buffer) likewise, by a matmul.  ``x @ y`` of two
    activations stays a matmul.  Exact fp32 replay reproduces torch."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.w, self.v = nn.Parameter(torch.randn(8, 6)), nn.Parameter(torch.randn(6, 6))
            self.u, self.first = nn.Parameter(torch.randn(6, 4)), nn.Parameter(torch.randn(3, 5))
            self.register_buffer("mix", torch.randn(2, 3))

        def forward(self, x):                                 # x (2, 5, 8)
            h = self.fc(x) @ self.w                           # (2, 5, 6)
            h = torch.relu(h) @ self.v.T                      # (2, 5, 6)
            h = torch.einsum("btd,de->bte", h, self.u)        # (2, 5, 4)
            g = self.mix @ (self.first @ h)                   # (2, 2, 4)
            return g @ h.mT                                   # (2, 2, 5)

    torch.manual_seed(8)
    model, x = M().eval(), torch.randn(2, 5, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")                        # every op linked: no warning
        trace = capture_torch(model, (x,))
    assert [(o.name, o.kind, o.inputs_from) for o in trace.ops] == [
        ("fc", "linear", []), ("matmul", "linear", ["fc"]), ("relu", "relu", ["matmul"]),
        ("matmul_2", "linear", ["relu"]), ("einsum", "linear", ["matmul_2"]),
        ("permute", "permute", ["einsum"]), ("matmul_3", "linear", ["permute"]),
        ("permute_2", "permute", ["matmul_3"]), ("permute_3", "permute", ["permute_2"]),
        ("matmul_4", "matmul", ["permute_3"]), ("permute_4", "permute", ["matmul_4"]),
        ("permute_5", "permute", ["einsum"]),
        ("matmul_5", "matmul", ["permute_4", "permute_5"])]
    for name, w in (("matmul", model.w.T), ("matmul_2", model.v), ("einsum", model.u.T),
                    ("matmul_3", model.first)):
        np.testing.assert_array_equal(trace.op(name).tensors["weight"], w.detach())
    np.testing.assert_array_equal(trace.op("matmul_4").tensors["b"], model.mix.T)
    with torch.no_grad():
        np.testing.assert_array_equal(trace.ops[-1].tensors["output"], model(x))
    cfgs = [_exact_fp32(), Config("fp8_e4m3", "fp32", {"accumulator": "exact"}, name="w8")]
    df = replay(trace, cfgs, "propagated")
    out = df[df.role == "output"].set_index(["config", "op"])
    assert (out.loc["fp32", "sqnr_db"] > 120).all()
    rows = df[(df.config == "w8") & df.op.isin(["matmul", "matmul_2", "einsum", "matmul_3"])]
    assert (rows[rows.role == "input"].sqnr_db == math.inf).all()     # fp32 activations
    assert (rows[rows.role == "weight"].sqnr_db < 40).all()           # fp8 weights


def test_the_op_that_makes_the_model_s_output_is_scored_as_the_model_s(tmp_path):
    """A BERT-style encoder returns its last hidden state first and a pooled vector made after
    it: capture records the op that makes the first output as the trace's meta ``output``
    (kept by save and load), and replay's task row scores that op's output, not the pooler's
    that ran last.  A meta ``output`` naming no op is refused."""
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.pooler = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):                                   # x (2, 5, 8)
            h = self.layer(x)
            return h, torch.tanh(self.pooler(h[:, 0]))

    torch.manual_seed(9)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_torch(Encoder().eval(), (torch.randn(2, 5, 8),))
    assert [o.name for o in trace.ops] == ["layer", "index", "pooler", "tanh"]
    assert trace.meta["output"] == "layer"
    loaded = load_trace(save_trace(trace, tmp_path / "t"))
    assert loaded.output_op.name == "layer"
    df = replay(loaded, Config("fp8_e4m3", "fp8_e4m3"), "propagated")
    task = df[df.role == "task"].iloc[0]
    layer = df[(df.op == "layer") & (df.role == "output")].iloc[0]
    assert task.numel == 2 * 5 * 8 and task.sqnr_db == layer.sqnr_db
    with pytest.raises(TraceError, match="meta 'output' names no op"):
        Trace(trace.ops, meta={"output": "head"})


def test_a_weight_first_flips_and_a_batched_constant_first_does_not():
    """``W @ x`` and ``einsum("oi,bti->bto", W, x)`` on the model's input (nothing recorded
    before) are linears by W all the same; a batched constant ``c`` (4, 3, 8) times a linked
    ``h`` (8, 5) stays a matmul, unlinked with a warning (flipped, the shared h would be
    priced once per batch)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 8))
            self.fc = nn.Linear(5, 5)
            self.register_buffer("c", torch.randn(4, 3, 8))

        def forward(self, x):                                    # x (2, 8, 5)
            y = self.w @ x                                       # (2, 6, 5)
            z = torch.einsum("oi,bti->bto", self.w, x.mT)        # (2, 5, 6)
            return y, z, self.c @ self.fc(x[0])                  # (4, 3, 5)

    torch.manual_seed(10)
    model, x = M().eval(), torch.randn(2, 8, 5)
    with torch.no_grad(), pytest.warns(UserWarning, match="matmul_2: an input depends"):
        trace = capture_torch(model, (x,))
    kinds = [(o.name, o.kind, o.inputs_from) for o in trace.ops]
    assert kinds == [("matmul", "linear", []), ("permute", "permute", ["matmul"]),
                     ("einsum", "linear", []), ("fc", "linear", []),
                     ("matmul_2", "matmul", [])]
    for name in ("matmul", "einsum"):
        np.testing.assert_array_equal(trace.op(name).tensors["weight"], model.w.detach())
    with torch.no_grad():
        y, z, _ = model(x)
    np.testing.assert_array_equal(trace.op("permute").tensors["output"], y)
    np.testing.assert_array_equal(trace.op("einsum").tensors["output"].reshape(2, 5, 6), z)


def test_calls_that_multiply_accumulate_unrecorded_are_named_and_mm_is_recorded():
    """A transposed conv, an LSTM, a matmul by a vector and a three-operand einsum all
    multiply-accumulate, but capture records no op for them: one warning names each, with the
    module it runs in, since their MACs are missing from the trace.  ``torch.mm`` by a weight
    is a ``linear`` (its weight bit for bit the parameter).  A model with nothing recorded
    warns that its trace is empty."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 4, 2, stride=2)
            self.rnn = nn.LSTM(4, 4, batch_first=True)
            self.w, self.v = nn.Parameter(torch.randn(4, 4)), nn.Parameter(torch.randn(4))

        def forward(self, x):                                   # x (2, 3, 3, 3)
            h = self.up(x).mean((2, 3))                         # (2, 4)
            h = self.rnn(h[:, None])[0][:, 0]
            h = torch.mm(h, self.w)
            chain = torch.einsum("bi,ij,jk->bk", h, self.w, self.w)
            return h + chain + (h @ self.v)[:, None]

    torch.manual_seed(2)
    model = M().eval()
    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        trace = capture_torch(model, (torch.randn(2, 3, 3, 3),))
    lost = [str(w.message) for w in caught if "multiply-accumulate" in str(w.message)]
    assert len(lost) == 1 and lost[0].startswith(
        "not recorded, though they multiply-accumulate: up (conv_transpose2d), rnn (lstm), "
        "einsum 'bi,ij,jk->bk' and 1 more (")       # the fourth: the matmul by a vector

    class VectorHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.v = nn.Linear(4, 4), nn.Parameter(torch.randn(4))

        def forward(self, x):
            return self.fc(x) @ self.v

    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        capture_torch(VectorHead(), torch.randn(2, 4))
    assert str(caught[0].message).startswith(
        "not recorded, though they multiply-accumulate: matmul by a vector (")
    mm_op = trace.op("matmul")                          # h @ w: a linear of weight w^T
    assert mm_op.kind == "linear" and mm_op.inputs_from == []
    assert np.array_equal(mm_op.tensors["weight"], model.w.detach().numpy().T)
    with pytest.warns(UserWarning) as caught:
        assert capture_torch(nn.GRU(4, 4), (torch.randn(3, 1, 4),)).ops == []
    assert [str(w.message).split(" (")[0] for w in caught] == [
        "not recorded, though they multiply-accumulate: gru", "no op recorded: the trace is empty"]


@pytest.mark.parametrize("eq,sums", [("ij,jk->ik", True), ("ij,jk", True), ("bi,ij,jk->bk", True),
                                     ("ij,ij->i", True), ("i,j->ij", False),
                                     ("ij,ij->ij", False), ("ij->i", False), ("ii->", False),
                                     ("bii->bi", False)])
def test_an_einsum_multiply_accumulates_where_it_multiplies_and_sums(eq, sums):
    """A letter summed away after a product is a MAC; a one-operand sum or trace only adds."""
    assert einsum.contracts(eq) is sums
