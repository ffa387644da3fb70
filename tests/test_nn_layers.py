"""Layer checks: hand-computed examples (thesis B.8 figures, an overlapping 5x1 case), gradcheck
in float64, the transpose identity, and decoder modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from convae_lightning.nn import (
    DECODER_IMPLS,
    BlindUpsample2d,
    DecoderConv2d,
    EncoderConv2d,
    MaxPool2dSwitches,
    SwitchUnpool2d,
    build_layer_specs,
    conv_transpose_weight,
    decoder_conv2d,
    global_max_pool_with_switches,
    pool_output_size,
)

X_2X2 = torch.tensor([[1.0, 2, 0, 1], [3, 4, 1, 5], [0, 1, 2, 0], [6, 1, 3, 1]]).view(1, 1, 4, 4)


def test_switch_unpool_2x2_stride2_figure11() -> None:
    y, idx = MaxPool2dSwitches((2, 2), (2, 2))(X_2X2)
    assert y.flatten().tolist() == [4, 5, 6, 3]
    out = SwitchUnpool2d((2, 2), (2, 2))(
        torch.tensor([10.0, 20, 30, 40]).view(1, 1, 2, 2), idx, (4, 4)
    )
    expected = torch.zeros(4, 4)
    expected[1, 1], expected[1, 3], expected[3, 0], expected[3, 2] = 10, 20, 30, 40
    assert torch.equal(out[0, 0], expected)


def test_blind_upsample_2x2_stride2_figure12() -> None:
    y = torch.tensor([[1.0, 2], [3, 4]]).view(1, 1, 2, 2)
    out = BlindUpsample2d((2, 2), (2, 2))(y, (4, 4))
    expected = torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    assert torch.equal(out[0, 0], expected)


def test_switch_unpool_5x1_overlap_shared_switch_gets_mean() -> None:
    # Regions [0..4] and [2..6] of a length-7 column both have their maximum at position 3.
    x = torch.tensor([0.0, 1, 2, 9, 3, 1, 0]).view(1, 1, 7, 1)
    _y, idx = MaxPool2dSwitches((5, 1), (2, 1))(x)
    assert idx.flatten().tolist() == [3, 3]
    out = SwitchUnpool2d((5, 1), (2, 1))(torch.tensor([2.0, 6]).view(1, 1, 2, 1), idx, (7, 1))
    assert out.flatten().tolist() == [0, 0, 0, 4, 0, 0, 0]
    # Distinct switches: plain placement.
    x = torch.tensor([5.0, 0, 0, 0, 0, 0, 7]).view(1, 1, 7, 1)
    _, idx = MaxPool2dSwitches((5, 1), (2, 1))(x)
    out = SwitchUnpool2d((5, 1), (2, 1))(torch.tensor([1.0, 2]).view(1, 1, 2, 1), idx, (7, 1))
    assert out.flatten().tolist() == [1, 0, 0, 0, 0, 0, 2]


def test_blind_upsample_5x1_overlap_averages() -> None:
    out = BlindUpsample2d((5, 1), (2, 1))(torch.tensor([2.0, 6]).view(1, 1, 2, 1), (7, 1))
    assert out.flatten().tolist() == [2, 2, 4, 4, 4, 6, 6]
    # 8 rows: the last is in no region (floor in the pooling size) and gets 0.
    out = BlindUpsample2d((5, 1), (2, 1))(torch.tensor([2.0, 6]).view(1, 1, 2, 1), (8, 1))
    assert out.flatten().tolist() == [2, 2, 4, 4, 4, 6, 6, 0]


@pytest.mark.parametrize("size", [(201, 16), (99, 8), (48, 4)])
def test_pool_unpool_restore_exact_size(size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    pool = MaxPool2dSwitches((5, 2), (2, 2))
    y, idx = pool(x)
    assert tuple(y.shape[-2:]) == pool_output_size(size, (5, 2), (2, 2))
    assert SwitchUnpool2d((5, 2), (2, 2))(y, idx, size).shape == x.shape
    assert BlindUpsample2d((5, 2), (2, 2))(y, size).shape == x.shape
    # Unpooling the pooled values puts the maxima back where they were.
    restored = SwitchUnpool2d((5, 2), (2, 2))(y, idx, size)
    mask = restored != 0
    assert torch.allclose(restored[mask], x[mask])


def test_global_pool_and_inverses() -> None:
    x = torch.randn(2, 3, 22, 2)
    y, idx = MaxPool2dSwitches(None)(x)
    assert y.shape == (2, 3, 1, 1)
    assert torch.equal(y.flatten(), x.flatten(2).amax(-1).flatten())
    out = SwitchUnpool2d(None)(y, idx, (22, 2))
    assert torch.equal(out.flatten(2).amax(-1), y.flatten(2).squeeze(-1).clamp_min(0))
    assert torch.count_nonzero(out) <= 6
    blind = BlindUpsample2d(None)(y, (22, 2))
    assert torch.equal(blind, y.expand(2, 3, 22, 2))


def test_switch_unpool_under_deterministic_algorithms() -> None:
    x = torch.randn(2, 4, 20, 6, requires_grad=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        y, idx = MaxPool2dSwitches((5, 2), (2, 2))(x)
        out = SwitchUnpool2d((5, 2), (2, 2))(y, idx, (20, 6))
        out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert out.shape == x.shape and x.grad is not None


def test_gradcheck_switch_unpool() -> None:
    x = torch.randn(2, 2, 11, 6, dtype=torch.float64)
    _, idx = MaxPool2dSwitches((5, 2), (2, 2))(x)
    y = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda v: SwitchUnpool2d((5, 2), (2, 2))(v, idx, (11, 6)), (y,))


@pytest.mark.parametrize(
    ("kernel", "stride", "size"), [((5, 2), (2, 2), (11, 6)), (None, None, (5, 3))]
)
def test_gradcheck_blind_upsample(kernel, stride, size) -> None:
    hw = pool_output_size(size, kernel, stride)
    y = torch.randn(2, 2, *hw, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda v: BlindUpsample2d(kernel, stride)(v, size), (y,))


def test_gradcheck_pool_with_switches() -> None:
    x = torch.randn(1, 2, 9, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda v: MaxPool2dSwitches((5, 2), (2, 2))(v)[0], (x,))


@pytest.mark.parametrize("kernel", [(4, 6), (5, 3), (5, 2)])  # even/odd, as in Figure 2
def test_gradcheck_encoder_and_decoder_convs(kernel: tuple[int, int]) -> None:
    enc = EncoderConv2d(2, 3, kernel).double()
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(enc, (x,))
    for mode in ("free", "tied"):
        for impl in DECODER_IMPLS:
            dec = DecoderConv2d(enc, mode=mode, impl=impl).double()
            y = torch.randn(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
            assert gradcheck(dec, (y,))


def test_conv_transpose_weight_formula_and_involution() -> None:
    w = torch.randn(4, 3, 5, 2)
    t = conv_transpose_weight(w)
    assert t.shape == (3, 4, 5, 2)
    # T(F)[i,j,k,d] = F[H-i+1, W-j+1, d, k] (1-based), here in (out, in, h, w) layout.
    for k, d, i, j in [(0, 0, 0, 0), (2, 1, 3, 1), (1, 3, 4, 0)]:
        assert t[k, d, i, j] == w[d, k, 5 - 1 - i, 2 - 1 - j]
    assert torch.equal(conv_transpose_weight(t), w)


@pytest.mark.parametrize("kernel", [(8, 16), (5, 3), (5, 2), (1, 1)])
@pytest.mark.parametrize("impl", DECODER_IMPLS)
def test_transposed_decoder_is_the_adjoint_of_the_encoder(kernel, impl) -> None:
    enc = EncoderConv2d(3, 4, kernel).double()
    with torch.no_grad():
        enc.bias.zero_()
    x = torch.randn(2, 3, 13, 9, dtype=torch.float64)
    g = torch.randn(2, 4, 13, 9, dtype=torch.float64)
    dec = decoder_conv2d(g, conv_transpose_weight(enc.weight), None, impl=impl)
    # <conv(x), g> == <x, conv_T(g)>: the transpose is the exact adjoint.
    lhs = (enc(x) * g).sum()
    rhs = (x * dec).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", [(8, 16), (5, 3), (5, 2)])
def test_decoder_impls_agree_with_padded_conv2d(kernel) -> None:
    w = torch.randn(2, 5, *kernel)
    b = torch.randn(2)
    y = torch.randn(3, 5, 20, 8)
    a = decoder_conv2d(y, w, b, impl="conv_transpose")
    c = decoder_conv2d(y, w, b, impl="conv2d")
    kh, kw = kernel
    reference = F.conv2d(F.pad(y, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2)), w, b)
    assert a.shape == (*y.shape[:1], 2, *y.shape[2:])
    assert torch.allclose(a, reference, atol=1e-4) and torch.allclose(c, reference, atol=1e-4)


def test_transpose_sync_starts_at_transpose_and_has_no_gradient() -> None:
    enc = EncoderConv2d(3, 4, (5, 3))
    dec = DecoderConv2d(enc, mode="transpose_sync")
    assert torch.equal(dec.weight, conv_transpose_weight(enc.weight))
    assert "weight" not in dict(dec.named_parameters())
    assert "weight" in dict(dec.named_buffers())
    dec(enc(torch.randn(2, 3, 9, 6))).sum().backward()
    assert dec.weight.grad is None and enc.weight.grad is not None
    with torch.no_grad():
        enc.weight.add_(1.0)
    assert not torch.equal(dec.weight, conv_transpose_weight(enc.weight))
    dec.sync_transpose_()
    assert torch.equal(dec.weight, conv_transpose_weight(enc.weight))


def test_tied_decoder_shares_storage_and_gradients() -> None:
    enc = EncoderConv2d(3, 4, (5, 2))
    dec = DecoderConv2d(enc, mode="tied")
    names = [n for n, _ in dec.named_parameters()]
    assert names == ["bias"]
    y = torch.randn(2, 4, 9, 6)
    dec(y).sum().backward()
    assert enc.weight.grad is not None and torch.count_nonzero(enc.weight.grad) > 0
    with torch.no_grad():
        enc.weight.mul_(2.0)
    # The decoder weight follows the encoder immediately (no copy to sync).
    assert torch.equal(dec.weight, conv_transpose_weight(enc.weight))


def test_init_transpose_then_trains_freely() -> None:
    enc = EncoderConv2d(3, 4, (5, 3))
    dec = DecoderConv2d(enc, mode="init_transpose")
    assert torch.equal(dec.weight, conv_transpose_weight(enc.weight))
    assert dec.weight.data_ptr() != enc.weight.data_ptr()
    dec(torch.randn(1, 4, 7, 5)).sum().backward()
    assert dec.weight.grad is not None and enc.weight.grad is None


@pytest.mark.parametrize(
    ("encoder", "kwargs", "match"),
    [
        ((3, 4, (5, 3)), {"mode": "fixed"}, "decoder_conv must be one of"),
        ((3, 4, (5, 3)), {"impl": "fft"}, "decoder_impl must be one of"),
        ((3, 4, (5, 3)), {"mode": "transpose_sync", "sync_bias": "free"}, "sync_bias must be"),
        ((3, 4, (5, 3), "valid"), {}, "same-padded"),
    ],
)
def test_decoder_rejects_bad_arguments(encoder, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        DecoderConv2d(EncoderConv2d(*encoder), **kwargs)


@pytest.mark.parametrize(("sync_bias", "bias_is_parameter"), [("zero", False), ("trained", True)])
def test_transpose_sync_bias_is_a_fixed_zero_unless_trained(sync_bias, bias_is_parameter) -> None:
    enc = EncoderConv2d(3, 4, (5, 3))
    dec = DecoderConv2d(enc, mode="transpose_sync", sync_bias=sync_bias)
    assert torch.equal(dec.bias, torch.zeros(3))
    assert ("bias" in dict(dec.named_parameters())) == bias_is_parameter
    assert ("bias" in dict(dec.named_buffers())) != bias_is_parameter
    dec(torch.randn(2, 4, 9, 6, requires_grad=True)).sum().backward()
    assert (dec.bias.grad is not None) == bias_is_parameter


# ------------------------------------------------------------ deterministic global pooling
@pytest.mark.parametrize("shape", [(2, 3, 22, 2), (1, 4, 1, 1), (3, 2, 5, 7)])
def test_global_pool_with_switches_equals_adaptive_max_pool(shape) -> None:
    x = torch.randn(*shape, dtype=torch.float64)
    x[0, 0] = 1.5  # a whole map of ties: the first maximum wins, in values and gradients
    x[-1, -1].view(-1)[-1] = 9.0  # a maximum in the last position
    ours = x.clone().requires_grad_(True)
    theirs = x.clone().requires_grad_(True)
    y, switches = global_max_pool_with_switches(ours)
    y_ref, switches_ref = F.adaptive_max_pool2d(theirs, 1, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(switches, switches_ref)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    assert torch.equal(ours.grad, theirs.grad)
    smooth = torch.randn(*shape, dtype=torch.float64, requires_grad=True)  # no ties
    assert gradcheck(lambda v: global_max_pool_with_switches(v)[0], (smooth,))


def test_switch_cae_with_global_pool_trains_under_deterministic_algorithms() -> None:
    from convae_lightning.models import ConvAutoencoder

    # No decoder ReLUs: with so few channels they could cut every gradient to the deep unit.
    model = ConvAutoencoder((1, 32, 8), conv_channels=(2, 2, 4, 8), decoder_relu=False)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)
    before = model.encoder[3].conv.weight.detach().clone()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        x = torch.randn(4, 1, 32, 8)
        loss = (model(x) - x).pow(2).sum()
        loss.backward()
        optimizer.step()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert model.encoder[3].pool.kernel_size is None  # the global pool with switches ran
    assert not torch.equal(model.encoder[3].conv.weight, before)


# --------------------------------------------------------------------------- pool strides
def test_pool_strides_give_figure2_maps_with_5x1_windows() -> None:
    # MatConvNet's scalar stride 2 on 5x1 windows: exactly Figure 2's 99x8 -> 48x4 -> 22x2.
    specs = build_layer_specs(
        (1, 201, 16),
        (8, 16, 32, 1000),
        ((8, 16), (5, 3), (5, 3), (5, 2)),
        ((5, 1), (5, 1), (5, 1), "global"),
        pool_strides=((2, 2), (2, 2), (2, 2), None),
    )
    assert [s.output_hw for s in specs] == [(99, 8), (48, 4), (22, 2), (1, 1)]
    assert specs[0].signature()["pool_stride"] == [2, 2]
    default = build_layer_specs((1, 201, 16), (8,), ((8, 16),), ((5, 1),))
    assert default[0].pool_stride == (2, 1) and default[0].output_hw == (99, 16)


@pytest.mark.parametrize(
    ("strides", "match"),
    [(((2, 0),), r"pool_strides\[0\]"), (((2, 2), (2, 2)), "equal lengths")],
)
def test_pool_strides_rejected(strides, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_layer_specs((1, 201, 16), (8,), ((8, 16),), ((5, 1),), pool_strides=strides)


def test_unpooling_skipped_columns_restores_size() -> None:
    # A 5x1 window with stride 2 in time reads every other column; the rest unpool to zero.
    x = torch.randn(2, 3, 99, 8)
    y, idx = MaxPool2dSwitches((5, 1), (2, 2))(x)
    assert y.shape == (2, 3, 48, 4)
    out = SwitchUnpool2d((5, 1), (2, 2))(y, idx, (99, 8))
    assert out.shape == x.shape and torch.count_nonzero(out[..., 1::2]) == 0
    blind = BlindUpsample2d((5, 1), (2, 2))(y, (99, 8))
    assert blind.shape == x.shape and torch.count_nonzero(blind[..., 1::2]) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 0, "out_channels": 2, "kernel_size": (3, 3)}, "in_channels"),
        ({"in_channels": 1, "out_channels": -1, "kernel_size": (3, 3)}, "out_channels"),
        ({"in_channels": 1, "out_channels": 2, "kernel_size": (0, 3)}, "kernel_size_h"),
    ],
)
def test_encoder_conv_rejects_non_positive_sizes(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        EncoderConv2d(**kwargs)


@pytest.mark.slow
def test_gpu_check_script_runs_on_the_cpu() -> None:
    # The script the GPU machine runs (benchmarks/gpu_check.py), kept working here on the CPU.
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
    result = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", "--steps", "2", "--batch_size", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "switch: 2 steps twice, identical weights: True; unit 4 trained: True" in result.stdout
    assert result.stdout.rstrip().endswith("PASS")
