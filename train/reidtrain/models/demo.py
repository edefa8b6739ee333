"""DeMo (Wang et al., AAAI 2025): decoupled feature-based mixture of experts on a shared CLIP ViT.

One CLIP ViT (tokens projected to C = 512 for ViT-B-16) encodes RGB, NIR and TIR. PIFE turns each modality's class
token and pooled patches into f_m (Eq. 2); HDM decouples the tokens into seven features with learnable queries
(Eqs. 3-8); ATMoE weights them with multi-head attention gates (Eqs. 9-15) into f (B, 7C).

Losses (Eq. 17): L_g([f_R, f_N, f_T]) + L_g(f), each L_g = label-smoothed CE (after a BNNeck) + triplet (before
it). The model returns ``features = [f_cat, f]`` and ``logits = [ce(f_cat), ce(f)]``; the trainer's objective sums
them. Test feature (Table 5, model E): [f_R, f_N, f_T, f] before the BNNecks, as the authors' code
(``NECK_FEAT: before``). The camera embedding (SIE) is added to every modality's class token, as the baseline.

Switches (``model_options``): ``pife``, ``hdm``, ``atmoe`` (Table 5: A = all off, B = PIFE, C = PIFE + HDM,
D/E = all on), ``heads`` (ATMoE heads, Table 6: 4 best on RGBNT201), ``test_feature`` ("all" = model E,
"moe" = model D, "modality" = [f_R, f_N, f_T]). With ``atmoe=False`` f is the plain concatenation of the seven
decoupled features (model C, as the authors' code); ATMoE without HDM has no experts and is refused.

The file reads top to bottom: the building blocks PIFE (Eq. 2), HDM (Eqs. 3-8) and ATMoE (Eqs. 9-15), then the model.
Facts taken from the authors' public code where the paper is silent (read for facts only):

- HDM: the seven query tokens start at ``dim ** -0.5 * randn``; each decoupling uses its own
  ``nn.MultiheadAttention`` with ``dim // 64`` heads (8 for CLIP's 512) and attention dropout 0.1.
- ATMoE: the reduction ``phi`` is Linear(7C -> C) + activation + BatchNorm1d (Eq. 10); ``W_q`` and ``W_k`` have no
  bias. The experts work on the per-head chunks: for head h, expert e is Linear(c -> c) + activation + BatchNorm1d(c)
  on the h-th chunk of D_e (c = C / H). This is what the code does and what Table 5's parameter count measures
  (ATMoE adds 2.83 M at C = 512, H = 4; a full C x C expert per decoupled feature, the literal reading of Eq. 14,
  would add 4.2 M). The weighted experts are concatenated expert-major: f = [E_R^1..E_R^H, E_N^1.., ..., E_RNT^H].
- The activation omega (PIFE, the ATMoE reduction and experts) is GELU as the paper says by default;
  ``activation="quick_gelu"`` uses CLIP's QuickGELU as the authors' code does.
- The authors' vehicle configs (RGBNT100, MSVR310) set ``MODEL.DIRECT: 0``: each of f_R, f_N, f_T gets its own
  BNNeck and classifier and its own CE + triplet loss instead of one head on [f_R, f_N, f_T]
  (``modality_supervision="per_modality"``; RGBNT201 keeps ``DIRECT: 1``, the concatenation of Eq. 17).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from reidtrain.models.layers.activations import Activation, make_activation
from reidtrain.models.layers.clip import ClipVisualEncoder, build_clip_visual
from reidtrain.models.layers.heads import (
    MODALITIES,
    BNNeck,
    zero_missing_modalities,
)
from reidtrain.models.layers.sie import camera_bias, camera_embedding
from reidtrain.models.registry import register_model

__all__ = [
    "EXPERT_NAMES",
    "EXPERT_SETS",
    "AttentionTriggeredMoE",
    "DeMo",
    "HierarchicalDecoupling",
    "PatchIntegratedExtractor",
]

# The decoupled features in the paper's order (Eq. 9): unimodal R, N, T; bimodal RN, NT, TR; trimodal RNT. Each
# entry lists the modality indices (0 = RGB, 1 = NIR, 2 = TIR) whose tokens form the key set (Eqs. 3, 5, 7).
EXPERT_SETS: tuple[tuple[int, ...], ...] = ((0,), (1,), (2,), (0, 1), (1, 2), (2, 0), (0, 1, 2))
EXPERT_NAMES: tuple[str, ...] = ("R", "N", "T", "RN", "NT", "TR", "RNT")


class PatchIntegratedExtractor(nn.Module):
    """PIFE for one modality, Eq. 2: f_m = GELU(W_pro(LN([f_cls, AvgPool(F_m)]))), W_pro: 2C -> C."""

    def __init__(self, dim: int, activation: Activation = "gelu") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim)
        self.proj = nn.Linear(2 * dim, dim)
        self.act = make_activation(activation)

    def forward(self, cls_token: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """cls_token (B, C), patches (B, N, C) -> f_m (B, C)."""
        pooled = patches.mean(dim=1)  # (B, C), P(F_m)
        return self.act(self.proj(self.norm(torch.cat([cls_token, pooled], dim=-1))))  # (B, C)


class HierarchicalDecoupling(nn.Module):
    """HDM, Eqs. 3-8: one learnable query per token set, multi-head cross-attention D_s = Phi(Q_s, K_s).

    The key (and value) tokens K_s concatenate [f_m, F_m] of every modality m in the set, in the set's order
    (Eq. 5: K_TR = [f_T, F_T, f_R, F_R]); the query attends to them without positional information.
    """

    def __init__(
        self,
        dim: int,
        heads: int | None = None,
        dropout: float = 0.1,
        token_sets: Sequence[tuple[int, ...]] = EXPERT_SETS,
    ) -> None:
        super().__init__()
        heads = max(1, dim // 64) if heads is None else heads
        if heads < 1 or dim % heads:
            raise ValueError(f"HDM heads must divide the feature size {dim}, got {heads}")
        self.token_sets = tuple(tuple(s) for s in token_sets)
        self.queries = nn.Parameter(dim**-0.5 * torch.randn(len(self.token_sets), dim))  # (n_d, C): Q_s
        self.attention = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) for _ in self.token_sets
        )

    @staticmethod
    def key_tokens(features: torch.Tensor, patches: torch.Tensor, modalities: Sequence[int]) -> torch.Tensor:
        """Eqs. 3, 5, 7: features (B, M, C), patches (B, M, N, C) -> K (B, |set| * (1 + N), C)."""
        parts = [torch.cat([features[:, m].unsqueeze(1), patches[:, m]], dim=1) for m in modalities]
        return torch.cat(parts, dim=1)

    def forward(self, features: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """features (B, 3, C) (PIFE output, or class tokens), patches (B, 3, N, C) -> decoupled D (B, n_d, C)."""
        b = features.shape[0]
        decoupled = []
        for s, (modalities, attention) in enumerate(zip(self.token_sets, self.attention, strict=True)):
            keys = self.key_tokens(features, patches, modalities)  # (B, T_s, C)
            query = self.queries[s].view(1, 1, -1).expand(b, 1, -1)  # (B, 1, C)
            out, _ = attention(query, keys, keys, need_weights=False)  # (B, 1, C), Eqs. 4, 6, 8
            decoupled.append(out.squeeze(1))
        return torch.stack(decoupled, dim=1)  # (B, n_d, C)


class AttentionTriggeredMoE(nn.Module):
    """ATMoE, Eqs. 9-15: attention over the n_d decoupled features gives per-head expert weights.

    D_q = BN(GELU(W_red [D_1..D_nd])) (Eqs. 9-10); Q = W_q D_q, K = W_k D_k (Eq. 11); per head h,
    alpha^h = softmax(Q^h K^h^T / sqrt(c)) over the n_d experts (Eqs. 12-13). The expert outputs
    E_e^h = BN(GELU(W_e^h D_e^h + b_e^h)) on the head chunks (Eq. 14, see the module docstring) are scaled by
    alpha_e^h (Eq. 15) and concatenated into f (B, n_d * C).
    """

    def __init__(
        self, dim: int, num_experts: int = len(EXPERT_SETS), heads: int = 4, activation: Activation = "gelu"
    ) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"ATMoE heads must divide the feature size {dim}, got {heads}")
        self.dim, self.num_experts, self.heads = dim, num_experts, heads
        self.head_dim = dim // heads
        self.reduce = nn.Sequential(nn.Linear(num_experts * dim, dim), make_activation(activation), nn.BatchNorm1d(dim))
        self.expert_act = make_activation(activation)  # omega of Eq. 14 (no parameters)
        self.query = nn.Linear(dim, dim, bias=False)  # W_q
        self.key = nn.Linear(dim, dim, bias=False)  # W_k
        c = self.head_dim
        bound = 1.0 / math.sqrt(c)  # nn.Linear's default initialisation, per (expert, head) block
        self.expert_weight = nn.Parameter(torch.empty(num_experts, heads, c, c).uniform_(-bound, bound))  # (out, in)
        self.expert_bias = nn.Parameter(torch.empty(num_experts, heads, c).uniform_(-bound, bound))
        self.expert_norm = nn.BatchNorm1d(num_experts * dim)  # one BatchNorm1d(c) per (expert, head), side by side

    def gates(self, decoupled: torch.Tensor) -> torch.Tensor:
        """Eqs. 9-13: decoupled (B, n_d, C) -> alpha (B, H, n_d), each row a softmax over the experts."""
        b, e, dim = decoupled.shape
        q = self.query(self.reduce(decoupled.reshape(b, e * dim)))  # (B, C), Eqs. 9-11
        k = self.key(decoupled)  # (B, n_d, C), Eq. 11
        q = q.view(b, self.heads, 1, self.head_dim)  # (B, H, 1, c)
        k = k.view(b, e, self.heads, self.head_dim).transpose(1, 2)  # (B, H, n_d, c)
        logits = (q @ k.transpose(-2, -1)).squeeze(2) / math.sqrt(self.head_dim)  # (B, H, n_d)
        return logits.softmax(dim=-1)  # Eq. 13

    def experts(self, decoupled: torch.Tensor) -> torch.Tensor:
        """Eq. 14 per head chunk: decoupled (B, n_d, C) -> E (B, n_d, H, c), before weighting."""
        b, e, _ = decoupled.shape
        chunks = decoupled.view(b, e, self.heads, self.head_dim)  # (B, n_d, H, c)
        out = torch.einsum("behi,ehoi->beho", chunks, self.expert_weight) + self.expert_bias  # (B, n_d, H, c)
        out = self.expert_norm(self.expert_act(out).reshape(b, e * self.dim))  # (B, n_d * C)
        return out.view(b, e, self.heads, self.head_dim)

    def forward(self, decoupled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """decoupled (B, n_d, C) -> (f (B, n_d * C), alpha (B, H, n_d))."""
        if decoupled.shape[1:] != (self.num_experts, self.dim):
            raise ValueError(f"expected decoupled features (B, {self.num_experts}, {self.dim}), got {decoupled.shape}")
        alpha = self.gates(decoupled)  # (B, H, n_d)
        weighted = self.experts(decoupled) * alpha.transpose(1, 2).unsqueeze(-1)  # (B, n_d, H, c), Eq. 15
        return weighted.flatten(1), alpha  # (B, n_d * C)


TestFeature = Literal["all", "moe", "modality"]
ModalitySupervision = Literal["concat", "per_modality"]


@register_model("demo")
class DeMo(nn.Module):
    """DeMo: shared CLIP ViT -> PIFE -> HDM -> ATMoE, with BNNeck heads on [f_R, f_N, f_T] and on f.

    Args:
        num_classes: training identities.
        backbone, image_size, weights, require_pretrained: as :class:`reidtrain.models.baseline.ClipBaseline`.
        num_cameras: cameras for SIE (0 switches it off); ``sie_factor`` scales it (1.0 in DeMo).
        pife: Patch-Integrated Feature Extractor on (else f_m is the class token).
        hdm: Hierarchical Decoupling Module on (else only [f_R, f_N, f_T] is trained and used).
        atmoe: Attention-Triggered MoE on (needs ``hdm``).
        heads: ATMoE heads H (Table 6); must divide C.
        hdm_heads: heads of HDM's cross-attentions; None = C // 64 (the authors' code), at least 1.
        hdm_dropout: attention dropout of HDM's cross-attentions (0.1 in the authors' code).
        test_feature: "all" ([f_R, f_N, f_T, f]; without HDM just [f_R, f_N, f_T]), "moe" (f) or "modality"
            ([f_R, f_N, f_T]), all pre-BN.
        activation: omega of PIFE and ATMoE, "gelu" (paper) or "quick_gelu" (authors' code).
        modality_supervision: "concat" trains one BNNeck on [f_R, f_N, f_T] (Eq. 17, ``DIRECT: 1``);
            "per_modality" one BNNeck per modality (``modality_necks``), each with its own loss (``DIRECT: 0``).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "ViT-B-16",
        image_size: tuple[int, int] = (256, 128),
        weights: Path | str | None = None,
        require_pretrained: bool = True,
        num_cameras: int = 0,
        sie_factor: float = 1.0,
        pife: bool = True,
        hdm: bool = True,
        atmoe: bool = True,
        heads: int = 4,
        hdm_heads: int | None = None,
        hdm_dropout: float = 0.1,
        test_feature: TestFeature = "all",
        activation: Activation = "gelu",
        modality_supervision: ModalitySupervision = "concat",
    ) -> None:
        super().__init__()
        if modality_supervision not in ("concat", "per_modality"):
            raise ValueError(f"modality_supervision must be 'concat' or 'per_modality', not {modality_supervision!r}")
        if atmoe and not hdm:
            raise ValueError("atmoe=True needs hdm=True: ATMoE weights the decoupled features that HDM produces")
        if test_feature not in ("all", "moe", "modality"):
            raise ValueError(f"test_feature must be 'all', 'moe' or 'modality', not {test_feature!r}")
        if test_feature == "moe" and not hdm:
            raise ValueError("test_feature='moe' needs hdm=True (f comes from the decoupled features)")
        visual = build_clip_visual(backbone, image_size, weights, require_pretrained)
        self.encoder = ClipVisualEncoder(visual, project=True)  # shared by the modalities; gets backbone_lr
        dim = self.encoder.out_dim  # C
        self.feat_dim = dim
        self.test_feature = test_feature
        self.sie_factor = sie_factor
        self.sie_embed = camera_embedding(num_cameras, self.encoder.width)  # (cameras, width) or None
        self.pife = nn.ModuleList(PatchIntegratedExtractor(dim, activation) for _ in MODALITIES) if pife else None
        self.hdm = HierarchicalDecoupling(dim, hdm_heads, hdm_dropout) if hdm else None
        self.atmoe = AttentionTriggeredMoE(dim, len(EXPERT_SETS), heads, activation) if atmoe else None
        self.per_modality = modality_supervision == "per_modality"
        if self.per_modality:  # one head per f_m (DIRECT: 0)
            self.modality_necks = nn.ModuleList(BNNeck(dim, num_classes) for _ in MODALITIES)
        else:  # one head on [f_R, f_N, f_T]
            self.modality_neck = BNNeck(len(MODALITIES) * dim, num_classes)
        self.moe_neck = BNNeck(len(EXPERT_SETS) * dim, num_classes) if hdm else None  # on f

    def modality_features(
        self, images: torch.Tensor, camids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, 3, H, W) -> (f_m (B, 3, C) after PIFE (or class tokens), patch tokens (B, 3, N, C))."""
        b, m = images.shape[:2]
        cls_bias = camera_bias(self.sie_embed, self.sie_factor, camids, m)  # (B * 3, width) or None
        tokens = self.encoder(images.flatten(0, 1), cls_bias=cls_bias)  # (B * 3, 1 + N, C)
        tokens = tokens.view(b, m, *tokens.shape[1:])  # (B, 3, 1 + N, C)
        cls, patches = tokens[:, :, 0], tokens[:, :, 1:]  # (B, 3, C), (B, 3, N, C)
        if self.pife is not None:
            cls = torch.stack([pife(cls[:, i], patches[:, i]) for i, pife in enumerate(self.pife)], dim=1)
        return cls, patches

    def forward(
        self,
        images: torch.Tensor,
        camids: torch.Tensor | None = None,
        missing: Sequence[str] = (),
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """images (B, 3 modalities [rgb, nir, tir], 3, H, W), camids (B,) or None.

        Returns ``features`` [f_cat (B, 3C), f (B, 7C)] (pre-BN; only f_cat without HDM; with per-modality
        supervision [f_R, f_N, f_T (each (B, C)), f]), in train mode ``logits`` (one per feature), in eval mode
        ``retrieval`` (see ``test_feature``); with ATMoE also ``expert_weights`` (B, H, 7), the gates alpha
        (Fig. 6). ``missing`` modalities are zeroed before the backbone (Tables 3-4).
        """
        images = zero_missing_modalities(images, missing)
        features, patches = self.modality_features(images, camids)  # (B, 3, C), (B, 3, N, C)
        f_cat = features.flatten(1)  # (B, 3C): [f_R | f_N | f_T]
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        feats: list[torch.Tensor]
        necks: list[nn.Module]
        if self.per_modality:
            feats, necks = list(features.unbind(dim=1)), list(self.modality_necks)  # 3 x (B, C)
        else:
            feats, necks = [f_cat], [self.modality_neck]
        if self.hdm is not None:
            decoupled = self.hdm(features, patches)  # (B, 7, C)
            if self.atmoe is not None:
                f_moe, alpha = self.atmoe(decoupled)  # (B, 7C), (B, H, 7)
                out["expert_weights"] = alpha
            else:
                f_moe = decoupled.flatten(1)  # (B, 7C), Table 5 model C
            feats.append(f_moe)
            assert self.moe_neck is not None  # built whenever HDM is
            necks.append(self.moe_neck)
        out["features"] = feats
        if self.training:
            out["logits"] = [neck(f)[1] for neck, f in zip(necks, feats, strict=True)]
        elif self.test_feature == "all":
            out["retrieval"] = torch.cat(feats, dim=1)  # (B, 3C + 7C)
        elif self.test_feature == "moe":
            out["retrieval"] = feats[-1]
        else:
            out["retrieval"] = f_cat
        return out
