"""The faster formulations of the layers compute what the plain ones compute (float64, to
rounding), gradients included, and training with them ends at the same weights."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from convae_lightning.models import ConvAutoencoder, ForwardClassifier
from convae_lightning.models.base import default_optimizer
from convae_lightning.nn import (
    CONV_IMPLS,
    DECODER_IMPLS,
    DecoderConv2d,
    EncoderConv2d,
    SwitchUnpool2d,
    global_blind_decode,
    global_switch_decode,
    padded_conv2d,
    prefers_gemm,
    prefers_time_as_channels,
)
from convae_lightning.nn.pool import _global_pool_by_gather

CL = torch.channels_last


def _grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out = fn(*inputs)
    # Drawn by shape (not randn_like): the same logical values whatever the output's layout.
    upstream = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    return out, list(torch.autograd.grad((out * upstream).sum(), inputs))


@pytest.mark.parametrize(
    ("channels", "kernel", "size", "padding"),
    [
        ((1, 8), (8, 16), (30, 16), (3, 4, 7, 8)),  # Figure 2's first layer (even kernel)
        ((8, 1), (8, 16), (30, 16), (4, 3, 8, 7)),  # its decoder's mirrored padding
        ((2, 3), (5, 6), (13, 5), (2, 2, 2, 3)),  # kernel wider than the input
        ((3, 40), (3, 2), (9, 4), (1, 1, 0, 1)),  # more filters than patch values: GEMM
        ((2, 3), (4, 4), (9, 4), (0, 0, 0, 0)),  # unpadded ("valid")
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_impls_agree_with_direct(channels, kernel, size, padding, channels_last) -> None:
    c, o = channels
    x = torch.randn(3, c, *size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    w = torch.randn(o, c, *kernel, dtype=torch.float64)
    b = torch.randn(o, dtype=torch.float64)
    inputs = [t.requires_grad_(True) for t in (x, w, b)]
    ref, ref_grads = _grads(lambda *a: padded_conv2d(*a, padding, impl="direct"), *inputs)
    for impl in CONV_IMPLS:
        out, grads = _grads(lambda *a, impl=impl: padded_conv2d(*a, padding, impl=impl), *inputs)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_auto_picks_time_as_channels_for_wide_thin_layers_and_gemm_for_many_filters() -> None:
    # Figure 2: 1 -> 8 (8x16) on 16 frames and its 8 -> 1 decoder; 32 -> 1000 (5x2).
    assert prefers_time_as_channels(1, 8, 16, 16) and prefers_time_as_channels(8, 1, 16, 16)
    assert not prefers_time_as_channels(8, 16, 3, 8)  # narrow kernel: more FLOPs
    assert prefers_gemm(32, 1000, (5, 2)) and not prefers_gemm(8, 16, (5, 3))
    # Both layouts the fast paths produce are channels-last (the pooling after is fastest so).
    x = torch.randn(2, 1, 20, 16)
    assert padded_conv2d(x, torch.randn(8, 1, 8, 16), None, (3, 4, 7, 8)).is_contiguous(
        memory_format=CL
    )


@pytest.mark.parametrize("mode", ["free", "tied", "transpose_sync"])
def test_decoder_impls_agree_with_each_other(mode) -> None:
    enc = EncoderConv2d(8, 1, (8, 16)).double()  # a thin layer: auto = time as channels
    y = torch.randn(2, 1, 30, 16, dtype=torch.float64, requires_grad=True)
    state = DecoderConv2d(enc, mode=mode).double().state_dict()
    outputs = {}
    for impl in DECODER_IMPLS:
        dec = DecoderConv2d(enc, mode=mode, impl=impl).double()
        dec.load_state_dict(state)
        outputs[impl] = dec(y)
    for impl, out in outputs.items():
        torch.testing.assert_close(out, outputs["conv2d"], rtol=1e-10, atol=1e-10, msg=impl)


def test_encoder_conv_rejects_unknown_impl() -> None:
    with pytest.raises(ValueError, match="impl must be one of"):
        EncoderConv2d(1, 2, (3, 3), impl="winograd")


@pytest.mark.parametrize("size", [(22, 2), (5, 3)])
def test_fused_global_decoders_equal_unpool_then_transposed_conv(size) -> None:
    b, c, o, kernel = 3, 6, 4, (5, 2)
    z = torch.randn(b, c, 1, 1, dtype=torch.float64).relu().requires_grad_(True)
    switches = torch.randint(0, size[0] * size[1], (b, c, 1, 1))
    switches[0, :3] = 1  # three channels share a switch: their kernels add up
    t = torch.randn(c, o, *kernel, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(o, dtype=torch.float64, requires_grad=True)
    padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)

    def unfused_switch(z, t, bias):
        unpooled = SwitchUnpool2d(None)(z, switches, size)
        return F.conv_transpose2d(unpooled, t, bias, padding=padding)[..., : size[0], : size[1]]

    def unfused_blind(z, t, bias):
        unpooled = z.expand(b, c, *size)
        return F.conv_transpose2d(unpooled, t, bias, padding=padding)[..., : size[0], : size[1]]

    cases = [
        (
            lambda *a: global_switch_decode(a[0], switches, a[1], a[2], size, padding),
            unfused_switch,
        ),
        (lambda *a: global_blind_decode(*a, size, padding), unfused_blind),
    ]
    for fused, unfused in cases:
        out, grads = _grads(fused, z, t, bias)
        ref, ref_grads = _grads(unfused, z, t, bias)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gather_global_pool_equals_adaptive_max_pool(channels_last) -> None:
    # The path CUDA takes under deterministic algorithms, checked here on the CPU.
    x = torch.randn(2, 5, 22, 2, dtype=torch.float64)
    x[0, 0] = 1.5  # ties: the first maximum wins
    if channels_last:
        x = x.contiguous(memory_format=CL)
    ours = x.clone().requires_grad_(True)
    theirs = x.clone().requires_grad_(True)
    y, switches = _global_pool_by_gather(ours)
    y_ref, switches_ref = F.adaptive_max_pool2d(theirs, 1, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(switches, switches_ref)
    y.sum().backward()
    y_ref.sum().backward()
    assert torch.equal(ours.grad, theirs.grad)


def _legacy(model: torch.nn.Module) -> torch.nn.Module:
    """The same model computing every layer the plain way (direct conv2d, conv_transpose2d,
    unpooled maps): the formulation before the fast paths."""
    legacy = copy.deepcopy(model)
    for block in legacy.encoder:
        block.conv.impl = "direct"
    for block in getattr(legacy, "decoder", []):
        block.conv.impl = "conv_transpose"
    return legacy


def _train(model: torch.nn.Module, batches, loss_fn) -> dict[str, torch.Tensor]:
    optimizer = default_optimizer(model.parameters())
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model, x, y).backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("build", "loss"),
    [
        (lambda: ForwardClassifier(), "classify"),
        (lambda: ConvAutoencoder(num_units=4, unpool="switch"), "reconstruct"),
        (lambda: ConvAutoencoder(num_units=4, unpool="blind", decoder_conv="tied"), "reconstruct"),
    ],
)
def test_training_ends_at_the_same_weights_as_the_plain_formulation(build, loss) -> None:
    # float64: AdaGrad's first steps are lr * sign(gradient), so in float32 a gradient that is
    # zero up to rounding can move one weight in 10^5 by a full step either way.
    torch.manual_seed(0)
    fast = build().double()
    slow = _legacy(fast)
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(8, 1, 201, 16, generator=generator, dtype=torch.float64),
            torch.randint(0, 48, (8,), generator=generator),
        )
        for _ in range(3)
    ]

    def loss_fn(model, x, y):
        if loss == "classify":
            return F.cross_entropy(model(x), y)
        return (model(x) - x).pow(2).flatten(1).sum(1).mean()

    fast.eval(), slow.eval()  # no dropout: identical computations
    ours, theirs = _train(fast, batches, loss_fn), _train(slow, batches, loss_fn)
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=1e-9, atol=1e-9, msg=name)


def test_default_optimizer_is_the_fused_adagrad_with_the_same_updates() -> None:
    torch.manual_seed(0)
    model = ForwardClassifier()
    twin = copy.deepcopy(model)
    fused = default_optimizer(model.parameters())
    plain = torch.optim.Adagrad(twin.parameters(), lr=0.01)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            grad = torch.randn_like(a)
            a.grad, b.grad = grad, grad.clone()
        fused.step(), plain.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # float32 rounding (1 ulp)
