"""Time the pure-PyTorch selective scan against a per-timestep loop of Mamba's equations at MambaPro's sizes.

python bench/selective_scan.py --batch 8 --threads 1
python bench/selective_scan.py --device cuda --batch 64   # adds mamba-ssm's kernel when it is installed

Sizes of MambaPro's Mamba Aggregation at ViT-B-16 (D = 512, expand 2, d_state 16): d_inner 1024 channels, state 16,
sequence 128 tokens per modality (intra-modality MA, 16x8 patches) and 3 x 128 = 384 (inter-modality MA). Paths:
``selective_scan_torch`` (in-cache time loop, checkpointed hand-written backward), the naive loop
(discretise and update one timestep at a time, autograd through every step), and, forward only, the two
formulations the module docstring compares with: dA and dBx materialised as (L, batch, D, N) tensors, and a
log-depth Hillis-Steele scan. Best of --repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from reidtrain.models.layers.selective_scan import mamba_ssm_available, selective_scan, selective_scan_torch


def naive_scan(u, delta, A, B, C, D, delta_bias):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t, y_t = C_t h_t + D x_t, one timestep at a time."""
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        dt = F.softplus(delta[:, :, t] + delta_bias)  # (batch, D)
        h = torch.exp(dt[..., None] * A) * h + dt[..., None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1)


def materialised_scan(u, delta, A, B, C, D, delta_bias):
    """The same scan with dA and dBx built as (L, batch, D, N) tensors, then an in-place time loop (forward only)."""
    dt = F.softplus(delta + delta_bias[:, None]).permute(2, 0, 1)  # (L, batch, D)
    a = torch.exp(dt[..., None] * A)  # (L, batch, D, N)
    h = (dt * u.permute(2, 0, 1))[..., None] * B.permute(2, 0, 1)[:, :, None]
    for t in range(1, h.shape[0]):
        h[t].addcmul_(a[t], h[t - 1])
    y = torch.einsum("lbdn,lbn->lbd", h, C.permute(2, 0, 1)).permute(1, 2, 0)
    return y + u * D[:, None]


def hillis_steele_scan(u, delta, A, B, C, D, delta_bias):
    """The same scan with a log2(L)-step parallel prefix over (dA, dBx) pairs (forward only)."""
    dt = F.softplus(delta + delta_bias[:, None]).permute(2, 0, 1)  # (L, batch, D)
    a = torch.exp(dt[..., None] * A)  # (L, batch, D, N)
    h = (dt * u.permute(2, 0, 1))[..., None] * B.permute(2, 0, 1)[:, :, None]
    step = 1
    while step < a.shape[0]:
        h = torch.cat([h[:step], h[step:] + a[step:] * h[:-step]])
        a = torch.cat([a[:step], a[step:] * a[:-step]])
        step *= 2
    y = torch.einsum("lbdn,lbn->lbd", h, C.permute(2, 0, 1)).permute(1, 2, 0)
    return y + u * D[:, None]


def best_seconds(run: Callable[[], None], repeats: int, device: torch.device) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1024, help="d_inner (1024 at ViT-B-16)")
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 384])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    print(f"batch {args.batch}, channels {args.channels}, state {args.state}, device {device}, threads {args.threads}")
    print("| length | path | forward s | forward+backward s | max abs diff vs naive |")
    print("| --- | --- | --- | --- | --- |")
    for length in args.lengths:
        b, d, n = args.batch, args.channels, args.state
        tensors = [
            torch.randn(b, d, length, generator=g),  # u
            torch.randn(b, d, length, generator=g) - 2.0,  # delta before softplus (Mamba-like small steps)
            -torch.arange(1.0, n + 1).repeat(d, 1),  # A: S4D-real init
            torch.randn(b, n, length, generator=g),  # B
            torch.randn(b, n, length, generator=g),  # C
            torch.ones(d),  # D
            torch.zeros(d),  # delta_bias
        ]
        inputs = [t.to(device).requires_grad_() for t in tensors]

        def fast(x=inputs):
            return selective_scan_torch(*x[:5], D=x[5], delta_bias=x[6], delta_softplus=True)

        paths: dict[str, Callable[[], torch.Tensor]] = {
            "naive loop": lambda x=inputs: naive_scan(*x),
            "selective_scan_torch": fast,
            "materialised dA, dBx (L, batch, D, N)": lambda x=inputs: materialised_scan(*x),
            "Hillis-Steele (log-depth)": lambda x=inputs: hillis_steele_scan(*x),
        }
        if device.type == "cuda" and mamba_ssm_available():
            paths["mamba-ssm kernel"] = lambda x=inputs: selective_scan(
                *x[:5], D=x[5], delta_bias=x[6], delta_softplus=True, backend="mamba_ssm"
            )
        with torch.no_grad():
            reference = paths["naive loop"]()
        for name, path in paths.items():
            with torch.no_grad():
                forward = best_seconds(path, args.repeats, device)
                diff = float((path() - reference).abs().max())
            both = "-"
            if name in ("naive loop", "selective_scan_torch", "mamba-ssm kernel"):

                def step(path=path) -> None:
                    path().square().mean().backward()

                both = f"{best_seconds(step, args.repeats, device):.3f}"
            print(f"| {length} | {name} | {forward:.3f} | {both} | {diff:.1e} |")


if __name__ == "__main__":
    main()
