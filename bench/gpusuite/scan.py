"""Section: mamba-ssm's selective-scan kernel against the pure-PyTorch scan (equal outputs and gradients, speed).

Sizes of MambaPro's Mamba Aggregation at ViT-B/16 with the recipe's batch of 64 triplets (d_inner 1024, d_state 16):
sequences of 128 tokens (intra-modality) and 384 (inter-modality). Both paths take the same fp32 inputs through
``reidtrain.models.layers.selective_scan.selective_scan`` (``backend="torch"`` / ``"mamba_ssm"``); the loss is a fixed
random projection of the output, so every input gets a gradient. The PyTorch scan is also checked against the naive
per-timestep loop of ``bench/selective_scan.py``. Times: best of ``repeats`` after one warm-up call. The kernel rows
are skipped, with the reason, where mamba-ssm does not import or there is no GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from gpusuite.common import Figure, Row, synchronize, timed

from reidtrain.models.layers.selective_scan import ScanBackend, mamba_ssm_available, selective_scan

AGREE = 1e-3
"""Largest relative difference (max |a - b| / max |b|) at which two paths count as equal."""


def _inputs(batch: int, channels: int, state: int, length: int, device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(length)
    tensors = [
        torch.randn(batch, channels, length, generator=g),  # u
        torch.randn(batch, channels, length, generator=g) - 2.0,  # delta before softplus (Mamba-like small steps)
        -torch.arange(1.0, state + 1).repeat(channels, 1),  # A: S4D-real init
        torch.randn(batch, state, length, generator=g),  # B
        torch.randn(batch, state, length, generator=g),  # C
        torch.ones(channels),  # D
        torch.zeros(channels),  # delta_bias
    ]
    return [t.to(device) for t in tensors]


def _best(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    run()  # warm-up
    synchronize(device)
    return min(timed(run, device)[0] for _ in range(repeats))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def scan_rows(
    device: torch.device, batch: int, channels: int, state: int, lengths: tuple[int, ...], repeats: int
) -> list[Row]:
    rows: list[Row] = []
    kernel_missing = None
    if device.type != "cuda":
        kernel_missing = "mamba-ssm's kernel needs CUDA tensors (--device cuda)"
    elif not mamba_ssm_available():
        kernel_missing = "mamba-ssm is not installed or does not import (pip install '.[mamba]')"
    for length in lengths:
        rows += _length_rows(device, batch, channels, state, length, repeats, kernel_missing)
    return rows


def _length_rows(
    device: torch.device, batch: int, channels: int, state: int, length: int, repeats: int, kernel_missing: str | None
) -> list[Row]:
    """The PyTorch scan's row and the kernel's (or its skip) at sequence length ``length``."""
    from selective_scan import naive_scan  # bench/selective_scan.py (bench/ is on sys.path)

    tensors = _inputs(batch, channels, state, length, device)
    weight = torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(1)).to(device)

    def forward(backend: ScanBackend, x: list[torch.Tensor]) -> torch.Tensor:
        u, delta, A, B, C, D, delta_bias = x
        return selective_scan(u, delta, A, B, C, D=D, delta_bias=delta_bias, delta_softplus=True, backend=backend)

    def gradients(backend: ScanBackend) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = [t.clone().requires_grad_() for t in tensors]
        y = forward(backend, x)
        (y * weight).sum().backward()
        return y.detach(), [t.grad for t in x if t.grad is not None]

    with torch.no_grad():
        naive = naive_scan(*tensors)
    torch_y, torch_grads = gradients("torch")
    times = {}
    backends: tuple[ScanBackend, ...] = ("torch",) if kernel_missing else ("torch", "mamba_ssm")
    for backend in backends:
        with torch.no_grad():
            fwd = _best(partial(forward, backend, tensors), device, repeats)
        both = _best(partial(gradients, backend), device, repeats)
        times[backend] = (fwd, both)
    fwd, both = times["torch"]
    rows = [
        Row(
            f"PyTorch scan, L={length}",
            {
                "forward": Figure(1000 * fwd, "ms", label="forward"),
                "forward_backward": Figure(1000 * both, "ms", label="forward+backward"),
                "vs_naive_loop": Figure(_relative(torch_y, naive), "max relative diff vs naive loop"),
            },
            note=f"batch {batch}, channels {channels}, state {state}, fp32; best of {repeats}",
        )
    ]
    case = f"mamba-ssm kernel, L={length}"
    if kernel_missing:
        return [*rows, Row(case, skipped=kernel_missing)]
    kernel_y, kernel_grads = gradients("mamba_ssm")
    output_diff = _relative(kernel_y, torch_y)
    grad_diff = max(_relative(a, b) for a, b in zip(kernel_grads, torch_grads, strict=True))
    equal = output_diff <= AGREE and grad_diff <= AGREE
    kfwd, kboth = times["mamba_ssm"]
    rows.append(
        Row(
            case,
            {
                "forward": Figure(1000 * kfwd, "ms", label="forward"),
                "forward_backward": Figure(1000 * kboth, "ms", label="forward+backward"),
                "speedup_forward_backward": Figure(both / kboth, "x vs PyTorch scan", label="speed-up"),
                "output_diff": Figure(output_diff, "max relative diff vs PyTorch scan"),
                "grad_diff": Figure(grad_diff, "max relative diff of the 7 gradients"),
            },
            note=("outputs and gradients equal" if equal else "OUTPUTS OR GRADIENTS DIFFER")
            + f" (relative tolerance {AGREE:g})",
        )
    )
    return rows
