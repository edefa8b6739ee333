"""The pure-PyTorch selective scan against a per-timestep loop of Mamba's equations; SSM and Mamba block; backends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidtrain.models.layers.selective_scan import (
    MambaBlock,
    SelectiveSSM,
    mamba_ssm_available,
    selective_scan,
    selective_scan_torch,
)


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Mamba's recurrence one timestep at a time, straight from the equations (the test oracle).

    dA = exp(delta * A), dB x = delta * B * x, h_t = dA h_{t-1} + dB x_t, y_t = C h_t + D x_t, y_t * silu(z_t).
    """
    batch, dim, length = u.shape
    h = u.new_zeros(batch, dim, A.shape[1])  # (batch, D, N)
    ys = []
    for t in range(length):
        dt = delta[:, :, t] if delta_bias is None else delta[:, :, t] + delta_bias  # (batch, D)
        if delta_softplus:
            dt = torch.log1p(torch.exp(dt))
        d_a = torch.exp(dt[:, :, None] * A[None])  # (batch, D, N)
        d_bx = dt[:, :, None] * B[:, None, :, t] * u[:, :, t, None]  # (batch, D, N)
        h = d_a * h + d_bx
        y = (h * C[:, None, :, t]).sum(-1)  # (batch, D)
        if D is not None:
            y = y + D * u[:, :, t]
        if z is not None:
            y = y * (z[:, :, t] * torch.sigmoid(z[:, :, t]))
        ys.append(y)
    return torch.stack(ys, dim=-1)  # (batch, D, L)


def scan_inputs(batch=2, dim=6, state=4, length=9, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "u": torch.randn(batch, dim, length, generator=g),
        "delta": 0.5 * torch.randn(batch, dim, length, generator=g),
        "A": -(0.1 + torch.rand(dim, state, generator=g)) * 3,
        "B": torch.randn(batch, state, length, generator=g),
        "C": torch.randn(batch, state, length, generator=g),
        "D": torch.randn(dim, generator=g),
        "z": torch.randn(batch, dim, length, generator=g),
        "delta_bias": 0.3 * torch.randn(dim, generator=g),
    }
    return {k: v.to(dtype).requires_grad_() for k, v in tensors.items()}


@pytest.mark.parametrize(
    "options",
    [
        {"delta_softplus": True},
        {"delta_softplus": False, "drop": ("D", "z", "delta_bias")},
        {"delta_softplus": True, "drop": ("z",)},
    ],
)
@pytest.mark.parametrize("chunk", [32, 4, 1])  # one chunk; 3 chunks, the last one partial; a checkpoint every step
def test_scan_equals_the_naive_recurrence_forward_and_gradients(options: dict, chunk: int) -> None:
    inputs = scan_inputs()
    if options["delta_softplus"] is False:  # keep delta positive without the softplus
        inputs["delta"] = inputs["delta"].detach().abs().requires_grad_()
    used = {k: v for k, v in inputs.items() if k not in options.get("drop", ())}
    fast = selective_scan_torch(**used, delta_softplus=options["delta_softplus"], chunk=chunk)
    slow = naive_scan(**used, delta_softplus=options["delta_softplus"])
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-10)
    weights = torch.randn_like(slow)
    grads_fast = torch.autograd.grad((fast * weights).sum(), list(used.values()))
    grads_slow = torch.autograd.grad((slow * weights).sum(), list(used.values()))
    for name, a, b in zip(used, grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8, msg=name)
        assert a.abs().sum() > 0, name


def test_scan_passes_gradcheck() -> None:
    inputs = scan_inputs(batch=1, dim=3, state=2, length=5)
    names = list(inputs)
    assert torch.autograd.gradcheck(
        lambda *xs: selective_scan_torch(**dict(zip(names, xs, strict=True)), delta_softplus=True, chunk=2),
        tuple(inputs.values()),
    )


def test_fp32_and_bf16_inputs_keep_their_dtype_and_agree() -> None:
    inputs = {k: v.detach() for k, v in scan_inputs(length=40).items()}
    reference = naive_scan(**inputs, delta_softplus=True)
    out32 = selective_scan_torch(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), reference, atol=1e-4, rtol=1e-4)
    half = {k: (v.bfloat16() if k in ("u", "delta", "B", "C", "z") else v.float()) for k, v in inputs.items()}
    out16 = selective_scan_torch(**half, delta_softplus=True)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.double(), reference, atol=0.1, rtol=0.05)


def test_long_sequence_stays_finite() -> None:
    """384 steps (MambaPro's inter-modality length) with strong decay and large inputs: no overflow."""
    g = torch.Generator().manual_seed(1)
    u = 10 * torch.randn(1, 4, 384, generator=g)
    y = selective_scan_torch(
        u, torch.full_like(u, 3.0), -16 * torch.ones(4, 16), torch.randn(1, 16, 384, generator=g),
        torch.randn(1, 16, 384, generator=g), delta_softplus=True,
    )  # fmt: skip
    assert y.isfinite().all()


def test_cpu_dispatch_uses_the_pure_pytorch_scan_and_rejects_unknown_backends() -> None:
    inputs = {k: v.detach().float() for k, v in scan_inputs().items()}
    expected = selective_scan_torch(**inputs, delta_softplus=True)
    torch.testing.assert_close(selective_scan(**inputs, delta_softplus=True), expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match="unknown scan backend"):
        selective_scan(**inputs, backend="triton")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        selective_scan(**inputs, backend="mamba_ssm")  # CPU tensors (and usually no mamba-ssm here)
    with pytest.raises(ValueError, match=r"B, C \(batch, N, L\)"):
        selective_scan_torch(inputs["u"], inputs["delta"], inputs["A"], inputs["B"][:, None], inputs["C"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not mamba_ssm_available(), reason="needs mamba-ssm (pip install .[mamba])")
def test_mamba_ssm_kernel_matches_the_pure_pytorch_scan_on_cuda() -> None:
    inputs = {k: v.detach().float().cuda().requires_grad_() for k, v in scan_inputs(dim=16, length=64).items()}
    kernel = selective_scan(**inputs, delta_softplus=True, backend="mamba_ssm")
    torch_ = selective_scan(**inputs, delta_softplus=True, backend="torch")
    torch.testing.assert_close(kernel, torch_, atol=1e-4, rtol=1e-4)
    weights = torch.randn_like(kernel)
    grads_kernel = torch.autograd.grad((kernel * weights).sum(), list(inputs.values()))
    grads_torch = torch.autograd.grad((torch_ * weights).sum(), list(inputs.values()))
    for name, a, b in zip(inputs, grads_kernel, grads_torch, strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3, msg=name)


# --- SSM and Mamba block --------------------------------------------------------------------------------------------


def test_selective_ssm_is_the_scan_of_its_own_projections() -> None:
    torch.manual_seed(0)
    ssm = SelectiveSSM(d_inner=8, d_state=4, dt_rank=2, out_norm=False).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64)  # (batch, L, d_inner)
    dt, b, c = ssm.x_proj(x).split([2, 4, 4], dim=-1)
    expected = naive_scan(
        x.transpose(1, 2), (dt @ ssm.dt_proj.weight.T).transpose(1, 2), -torch.exp(ssm.A_log), b.transpose(1, 2),
        c.transpose(1, 2), ssm.D, delta_bias=ssm.dt_proj.bias, delta_softplus=True,
    ).transpose(1, 2)  # fmt: skip
    torch.testing.assert_close(ssm(x), expected)
    # Mamba's initialisation: A = -(1..N) per channel, D = 1, softplus(dt bias) in [1e-3, 0.1]
    torch.testing.assert_close(-torch.exp(ssm.A_log[0]), -torch.arange(1.0, 5.0, dtype=torch.float64))
    assert torch.equal(ssm.D, torch.ones_like(ssm.D))
    dt0 = F.softplus(ssm.dt_proj.bias)
    assert (dt0 >= 1e-3 - 1e-9).all() and (dt0 <= 0.1 + 1e-9).all()
    assert SelectiveSSM(8, 4, 2)(x.float()).shape == (2, 7, 8)  # with its output LayerNorm


def test_mamba_block_1d_is_causal_and_trains() -> None:
    torch.manual_seed(0)
    block = MambaBlock(d_model=8, d_state=4)  # Mamba's block: causal conv, one stream
    x = torch.randn(2, 10, 8, requires_grad=True)
    (out,) = block([x])
    assert out.shape == x.shape
    later = x.detach().clone()
    later[:, 6:] += torch.randn(2, 4, 8)  # change only the future
    (out_later,) = block([later])
    torch.testing.assert_close(out_later[:, :6], out[:, :6].detach())
    assert not torch.allclose(out_later[:, 6:], out[:, 6:].detach())
    out.pow(2).mean().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_mamba_block_separate_and_joint_streams() -> None:
    """joint=False: streams never mix; joint=True: one scan over [s0 | s1 | s2], earlier streams feed later ones."""
    torch.manual_seed(0)
    streams = [torch.randn(2, 6, 8) for _ in range(3)]
    changed = [s.clone() for s in streams]
    changed[1] = changed[1] + 1.0
    for joint in (False, True):
        block = MambaBlock(8, num_streams=3, joint=joint, grid=(2, 3), d_state=4).eval()  # BN on running stats
        before, after = block(streams), block(changed)
        torch.testing.assert_close(after[0], before[0])  # stream 0 precedes stream 1 in either case
        same_last = torch.allclose(after[2], before[2])
        assert same_last is (not joint)
    with pytest.raises(ValueError, match="grid"):
        MambaBlock(8, num_streams=1, grid=(2, 2), d_state=4)([torch.randn(1, 6, 8)])
