"""STMI's SFM attention at ViT-B/16 size: the paper's form (Eqs. 3-8 as written) against the fused one, side by side.

Forward + backward of one attention layer's score path on (B * 3, 12 heads, 129 tokens): the paper's form builds
M_pos, M_neg, R products and a float32 softmax (``modulation``); ``modulated_scores`` does one aminmax pass, two
lerps and a softmax in the scores' dtype. Prints time and the bytes autograd keeps for backward (what limits the
batch on a GPU), in fp32 and bf16, optionally with ``torch.compile`` of the fused function.

    python bench/sfm.py --batch 16 --threads 1
    python bench/sfm.py --device cuda --batch 192 --compile
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from reidtrain.models.stmi import foreground_relation, modulated_scores, modulation


def paper(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, relation: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    logits = q @ k.transpose(-2, -1)
    logits = logits + modulation(logits, relation, a, b)
    return torch.softmax(logits / math.sqrt(q.shape[-1]), dim=-1, dtype=torch.float32).to(v.dtype) @ v


def fused(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, foreground: torch.Tensor, a: torch.Tensor, b: torch.Tensor
):
    scores = modulated_scores((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), foreground, a, b)
    return torch.softmax(scores, dim=-1, dtype=scores.dtype) @ v


def measure(fn, inputs, repeats: int, device: torch.device) -> tuple[float, int]:
    """(best seconds of forward + backward, bytes saved for backward)."""
    kept: dict[tuple[int, int], int] = {}  # (data pointer, bytes) of each distinct tensor autograd keeps

    def pack(t: torch.Tensor) -> torch.Tensor:
        size = t.numel() * t.element_size()
        kept[(t.data_ptr(), size)] = size
        return t

    best = float("inf")
    for i in range(repeats + 1):
        kept.clear()
        q, k, v = (x.detach().requires_grad_() for x in inputs[:3])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(q, k, v, *inputs[3:])
        out.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first run warms up (and compiles)
            best = min(best, time.perf_counter() - start)
    return best, sum(kept.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="images (B * 3 for B triplets)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also torch.compile the fused function")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    n, heads, tokens, dim = args.batch, 12, 129, 64
    relation = foreground_relation(torch.rand(n, tokens - 1, generator=g) > 0.4).to(device)  # (n, T, T)
    foreground = (relation > 0.5).unsqueeze(1)
    a, b = torch.tensor([0.1], device=device), torch.tensor([0.1], device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"SFM score path, {n} images x {heads} heads x {tokens} tokens, forward + backward, {where}")
    variants = [
        ("paper form (modulation + fp32 softmax)", paper, relation),
        ("fused (aminmax + lerp)", fused, foreground),
    ]
    if args.compile:
        variants.append(("fused, torch.compile", torch.compile(fused), foreground))
    for dtype in (torch.float32, torch.bfloat16):
        qkv = [torch.randn(n, heads, tokens, dim, generator=g).to(device, dtype) for _ in range(3)]
        base = None
        for label, fn, mask in variants:
            seconds, saved = measure(fn, (*qkv, mask, a, b), args.repeats, device)
            base = base or seconds
            print(f"  {str(dtype).removeprefix('torch.'):8s} {label:40s} {1e3 * seconds:8.1f} ms  "
                  f"saved for backward {saved / 2**20:7.1f} MiB  ({base / seconds:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
