"""Each speed lever against its alternatives, measured in the same run (the evidence behind what
the layers and models do by default; docs/benchmarks.md).

Layers are timed forward + backward at the Figure 2 shapes (inputs requiring gradients where the
model's do); whole steps in a plain training loop. Levers:

- ``conv``: every encoder/decoder convolution as direct ``conv2d`` (NCHW and channels-last),
  time-as-channels, one GEMM and ``conv_transpose2d`` (decoders).
- ``global_decode``: the global unit's unpooling + decoder convolution, plain vs fused.
- ``pool``: max pooling on NCHW vs channels-last maps; global pooling as ``amax``,
  ``adaptive_max_pool2d`` and ``argmax`` + ``gather``.
- ``optimizer``: AdaGrad's per-tensor loop, ``foreach`` and ``fused`` steps.
- ``compile``: ``torch.compile`` of our modules vs eager (training steps).
- ``bf16``: ``torch.autocast(bfloat16)`` vs fp32 (training steps; needs AVX512-BF16 or AMX).
- ``malloc``: tuned glibc malloc variables vs the defaults (training steps in child processes).

::

    python benchmarks/levers.py                      # all levers, ~5 minutes
    python benchmarks/levers.py --levers '[conv, pool]'
    python benchmarks/levers.py --smoke true         # seconds, for CI (no timing meaning)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import TUNED_MALLOC_VARIABLES, cpu_flags, emit, machine, save, table
from jsonargparse import CLI
from torch import Tensor

from convae_lightning.allocator import tune_malloc
from convae_lightning.models import ConvAutoencoder, ForwardClassifier
from convae_lightning.models.base import default_optimizer
from convae_lightning.nn import (
    FIGURE2,
    SwitchUnpool2d,
    build_layer_specs,
    decoder_conv2d,
    global_blind_decode,
    global_switch_decode,
    padded_conv2d,
    same_padding,
)
from convae_lightning.nn.pool import _global_pool_by_gather

CL = torch.channels_last
#: The glibc settings of cpu-performance-notes.md.
TUNED_MALLOC = dict(
    zip(TUNED_MALLOC_VARIABLES, ("4294967296", "68719476736", "536870912"), strict=True)
)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def fwd_bwd(fn: Callable[..., Tensor], *inputs: Tensor) -> Callable[[], None]:
    def run() -> None:
        out = fn(*inputs)
        out.backward(torch.ones(out.shape, dtype=out.dtype))

    return run


def _rows(lever: str, what: str, times: dict[str, float]) -> list[tuple]:
    base = next(iter(times.values()))
    best = min(times, key=times.get)
    return [
        (lever, what, f"**{k}**" if k == best else k, f"{v:.1f}", f"{base / v:.2f}")
        for k, v in times.items()
    ]


def lever_conv(batch: int, repeats: int) -> list[tuple]:
    rows = []
    specs = build_layer_specs(
        (1, 201, 16), FIGURE2["conv_channels"], FIGURE2["kernel_sizes"], FIGURE2["pool_sizes"]
    )
    for spec in specs:
        c, o, (kh, kw), (h, w) = (
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            spec.input_hw,
        )
        pad = same_padding((kh, kw))
        weight = torch.randn(o, c, kh, kw, requires_grad=True)
        bias = torch.randn(o, requires_grad=True)
        x = torch.randn(batch, c, h, w, requires_grad=spec.index > 0)
        xc = x.detach().contiguous(memory_format=CL).requires_grad_(x.requires_grad)
        times = {
            "direct (NCHW)": timed(
                fwd_bwd(
                    lambda a, b, d, pad=pad: padded_conv2d(a, b, d, pad, "direct"), x, weight, bias
                ),
                repeats,
            ),
            "direct (channels-last)": timed(
                fwd_bwd(
                    lambda a, b, d, pad=pad: padded_conv2d(a, b, d, pad, "direct"), xc, weight, bias
                ),
                repeats,
            ),
            "GEMM": timed(
                fwd_bwd(
                    lambda a, b, d, pad=pad: padded_conv2d(a, b, d, pad, "gemm"), xc, weight, bias
                ),
                repeats,
            ),
        }
        if kw >= w:
            times["time as channels"] = timed(
                fwd_bwd(
                    lambda a, b, d, pad=pad: padded_conv2d(a, b, d, pad, "time_as_channels"),
                    xc,
                    weight,
                    bias,
                ),
                repeats,
            )
        rows += _rows("conv", f"encoder {spec.index} ({c}->{o}, {kh}x{kw})", times)
        if spec.pool == "global":
            continue  # its decoder is the global_decode lever
        y = torch.randn(batch, o, h, w).contiguous(memory_format=CL).requires_grad_(True)
        t = weight.detach().clone().requires_grad_(True)  # the decoder's T (encoder layout)
        dbias = torch.randn(c, requires_grad=True)
        times = {}
        for impl in ("conv2d", "conv_transpose", "time_as_channels"):
            if impl == "time_as_channels" and kw < w:
                continue
            times[impl] = timed(
                fwd_bwd(
                    lambda a, b, d, impl=impl: decoder_conv2d(
                        a, None, d, transposed_weight=b, impl=impl
                    ),
                    y,
                    t,
                    dbias,
                ),
                repeats,
            )
        rows += _rows("conv", f"decoder {spec.index} ({o}->{c}, {kh}x{kw})", times)
    return rows


def lever_global_decode(batch: int, repeats: int) -> list[tuple]:
    c, o, size, kernel = 1000, 32, (22, 2), (5, 2)
    padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    z = torch.randn(batch, c, 1, 1).relu().requires_grad_(True)
    switches = torch.randint(0, size[0] * size[1], (batch, c, 1, 1))
    t = torch.randn(c, o, *kernel, requires_grad=True)
    bias = torch.randn(o, requires_grad=True)

    def unfused(unpooled: Tensor) -> Tensor:
        out = F.conv_transpose2d(unpooled, t, bias, padding=padding)
        return out[..., : size[0], : size[1]]

    rows = _rows(
        "global_decode",
        "switch unpool + decoder 3 (1000->32)",
        {
            "unpooled map + conv_transpose2d": timed(
                fwd_bwd(lambda v: unfused(SwitchUnpool2d(None)(v, switches, size)), z), repeats
            ),
            "embedding_bag + fold (fused)": timed(
                fwd_bwd(lambda v: global_switch_decode(v, switches, t, bias, size, padding), z),
                repeats,
            ),
        },
    )
    rows += _rows(
        "global_decode",
        "blind upsampling + decoder 3 (1000->32)",
        {
            "constant map + conv_transpose2d": timed(
                fwd_bwd(lambda v: unfused(v.expand(batch, c, *size).contiguous()), z), repeats
            ),
            "one (B,C)@(C,O*H*W) product (fused)": timed(
                fwd_bwd(lambda v: global_blind_decode(v, t, bias, size, padding), z), repeats
            ),
        },
    )
    return rows


def lever_pool(batch: int, repeats: int) -> list[tuple]:
    rows = []
    for c, h, w in ((8, 201, 16), (16, 99, 8), (32, 48, 4)):
        x = torch.randn(batch, c, h, w, requires_grad=True)
        xc = x.detach().contiguous(memory_format=CL).requires_grad_(True)
        times = {
            layout: timed(
                fwd_bwd(lambda v: F.max_pool2d(v, (5, 2), (2, 2), return_indices=True)[0], v),
                repeats,
            )
            for layout, v in (("NCHW", x), ("channels-last", xc))
        }
        rows += _rows("pool", f"max pool 5x2/2x2 of {c}x{h}x{w}", times)
    x = torch.randn(batch, 1000, 22, 2).contiguous(memory_format=CL).requires_grad_(True)
    times = {
        "amax": timed(fwd_bwd(lambda v: torch.amax(v, dim=(-2, -1)), x), repeats),
        "adaptive_max_pool2d": timed(fwd_bwd(lambda v: F.adaptive_max_pool2d(v, 1), x), repeats),
        "argmax + gather": timed(fwd_bwd(lambda v: _global_pool_by_gather(v)[0], x), repeats),
    }
    return rows + _rows("pool", "global max pool of 1000x22x2", times)


def lever_optimizer(batch: int, repeats: int) -> list[tuple]:
    model = ForwardClassifier()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    times = {}
    for name, kwargs in (("for-loop", {}), ("foreach", {"foreach": True}), ("fused", {})):
        if name == "fused":
            optimizer = default_optimizer(model.parameters())
        else:
            optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01, **kwargs)
        times[name] = timed(optimizer.step, repeats)
    return _rows("optimizer", "AdaGrad step, forward network (2.4M parameters)", times)


def _step_fn(model: torch.nn.Module, batch: int, autocast: bool = False) -> Callable[[], None]:
    x = torch.randn(batch, 1, 201, 16)
    y = torch.randint(0, 48, (batch,))
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x)
            if out.shape == x.shape:
                loss = (out.float() - x).pow(2).flatten(1).sum(1).mean()
            else:
                loss = F.cross_entropy(out.float(), y)
        loss.backward()
        optimizer.step()

    return step


def _models() -> dict[str, Callable[[], torch.nn.Module]]:
    return {
        "forward network": ForwardClassifier,
        "4-unit CAE (switch)": lambda: ConvAutoencoder(num_units=4),
    }


def lever_compile(batch: int, repeats: int) -> list[tuple]:
    rows = []
    for name, build in _models().items():
        torch.manual_seed(0)
        eager = build()
        compiled = torch.compile(build())
        times = {
            "eager": timed(_step_fn(eager, batch), repeats),
            "torch.compile": timed(_step_fn(compiled, batch), repeats),
        }
        rows += _rows("compile", f"training step, {name}", times)
    return rows


def lever_bf16(batch: int, repeats: int) -> list[tuple]:
    flags = cpu_flags()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    rows = []
    for name, build in _models().items():
        times = {
            "fp32": timed(_step_fn(build(), batch), repeats),
            "bf16 autocast": timed(_step_fn(build(), batch, autocast=True), repeats),
        }
        rows += _rows("bf16", f"training step, {name} (native bf16: {native})", times)
    return rows


MALLOC_CHILD = """
import sys, time, statistics, torch
sys.path.insert(0, sys.argv[1])
if sys.argv[6] == "mallopt":
    from convae_lightning.allocator import tune_malloc
    assert tune_malloc()
torch.set_num_threads(int(sys.argv[2]))
from levers import _step_fn, _models, timed
build = _models()[sys.argv[3]]
print(timed(_step_fn(build(), int(sys.argv[4])), int(sys.argv[5])))
"""


def lever_malloc(batch: int, repeats: int) -> list[tuple]:
    here = str(Path(__file__).parent)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    variants = (
        ("glibc defaults", base_env, "none"),
        ("MALLOC_*_ variables (notes)", {**base_env, **TUNED_MALLOC}, "none"),
        ("mallopt at start-up (the console scripts)", base_env, "mallopt"),
    )
    rows = []
    for name in _models():
        times = {}
        for label, env, mode in variants:
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    MALLOC_CHILD,
                    here,
                    str(torch.get_num_threads()),
                    name,
                    str(batch),
                    str(repeats),
                    mode,
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            times[label] = float(out.stdout.strip().splitlines()[-1])
        rows += _rows("malloc", f"training step, {name}", times)
    return rows


LEVERS: dict[str, Callable[[int, int], list[tuple]]] = {
    "conv": lever_conv,
    "global_decode": lever_global_decode,
    "pool": lever_pool,
    "optimizer": lever_optimizer,
    "compile": lever_compile,
    "bf16": lever_bf16,
    "malloc": lever_malloc,
}


def main(
    levers: list[str] = list(LEVERS),  # noqa: B006
    batch_size: int = 256,
    repeats: int = 5,
    threads: int = 2,
    smoke: bool = False,
    out: Path | None = None,
) -> list[tuple]:
    """Print one table: for each lever and place, every variant's milliseconds and speed-up.

    Args:
        levers: Any of ``conv``, ``global_decode``, ``pool``, ``optimizer``, ``compile``,
            ``bf16``, ``malloc``.
        batch_size: Samples per batch.
        repeats: Timed calls per variant (median).
        threads: torch threads.
        smoke: A seconds-long run (batch 2, 1 repeat, no compile/malloc) that only checks the
            script works.
        out: Write the rows as JSON here (default ``$OUT/levers.json`` when ``$OUT`` is set).
    """
    if smoke:
        batch_size, repeats = 2, 1
        levers = [name for name in levers if name not in ("compile", "malloc")]
    unknown = [name for name in levers if name not in LEVERS]
    if unknown:
        raise ValueError(f"levers: {unknown} not among {list(LEVERS)}")
    tune_malloc()  # as the console scripts do
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    emit(f"machine: {machine()}")
    rows: list[tuple] = []
    for name in levers:
        rows += LEVERS[name](batch_size, repeats)
        emit(f"done: {name}")
    header = ("lever", "where", "variant (fastest in bold)", "ms", "speed-up vs first")
    emit(f"\nbatch {batch_size}, {threads} threads\n\n" + table(header, rows))
    save(rows, out, "levers.json")
    return rows


if __name__ == "__main__":
    CLI(main, as_positional=False)
