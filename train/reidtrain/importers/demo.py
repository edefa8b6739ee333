"""The DeMo authors' checkpoint names -> our :class:`reidtrain.models.demo.DeMo`.

Key names and shapes were read from the authors' public code, github.com/924973292/DeMo at commit
b4f323a430b32e3a1637c3e7acb25868cb52e9cd (``modeling/make_model.py``, ``modeling/meta_arch.py``,
``modeling/moe/AttnMOE.py``, ``modeling/clip/model.py``); none of it is copied here. Their ``model.state_dict()`` holds:

- ``BACKBONE.base.*``: OpenAI CLIP's visual tower under open_clip's names (a prefix rename), ``BACKBONE.cv_embed``
  (cameras, 1, 768): SIE, one row per training camera, indexed by the camera number they parse (see ``cameras``).
- ``{rgb,nir,tir}_reduce.{0: LayerNorm, 1: Linear}``: PIFE.
- ``generalFusion.{r,n,t,rn,rt,nt,rnt}_token`` (1, 1, C) and ``generalFusion.{r,...,rnt}`` (MultiheadAttention):
  HDM. Their expert order is R, N, T, RN, RT, NT, RNT; ours is R, N, T, RN, NT, TR (``EXPERT_SETS``): the map
  follows the modality sets, so RT lands on TR (attention over [R, T] or [T, R] tokens is the same: no positions).
- ``generalFusion.moe``: ATMoE. ``gating_network.gate.linear_re`` (Linear 7C -> C, QuickGELU, BatchNorm) reads the
  seven features concatenated in their order, so its input columns are permuted to ours; ``q_`` / ``k_``;
  ``experts.h.expertHead.e.mlp.{0: Linear(c, c), 2: BatchNorm1d(c)}`` for head h and expert e: one (e, h) block of
  our ``expert_weight`` / ``expert_bias`` and channels ``e*C + h*c`` .. ``+ c`` of ``expert_norm``.
- ``bottleneck_moe`` / ``classifier_moe``: the BNNeck on f, whose 7C channels are expert-major (their MoM
  concatenates per head, then flattens (B, 7, H*c)), permuted in blocks of C as the experts.
- ``DIRECT 1``: ``bottleneck`` / ``classifier`` on [f_R, f_N, f_T]; ``DIRECT 0``: ``bottleneck_{r,n,t}`` /
  ``classifier_{r,n,t}``, one per modality (our ``modality_supervision: per_modality``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from reidtrain.importers.mapping import MODALITY, Groups, Rule, Unplaceable, permute_blocks, squeeze_dims
from reidtrain.models.demo import EXPERT_SETS

__all__ = ["CAMERA_KEY", "CLASSIFIER_KEYS", "MODEL", "SOURCE", "hints", "name_map"]

MODEL = "demo"
SOURCE = "github.com/924973292/DeMo @ b4f323a430b32e3a1637c3e7acb25868cb52e9cd"
CAMERA_KEY = "BACKBONE.cv_embed"
CLASSIFIER_KEYS = ("classifier_moe.weight", "classifier.weight", "classifier_r.weight")  # rows = training ids

THEIR_EXPERTS = ("r", "n", "t", "rn", "rt", "nt", "rnt")  # GeneralFusion's order (tokens, attentions, MoM inputs)
# their expert e -> our expert index, by the set of modalities it decouples
EXPERT = {
    name: [frozenset(s) for s in EXPERT_SETS].index(frozenset(MODALITY[c] for c in name)) for name in THEIR_EXPERTS
}
ORDER = tuple(EXPERT[name] for name in THEIR_EXPERTS)  # block i of theirs -> block ORDER[i] of ours
_E = "|".join(THEIR_EXPERTS)
_ATM = r"generalFusion\.moe\."


def name_map(model: Any) -> tuple[list[Rule], Callable[[Groups], Groups]]:
    """(the rules, the group conversion) for ``model``: our DeMo as configured (dims, ATMoE heads, supervision).

    Groups: ``m`` a modality (rgb/nir/tir or r/n/t) -> 0/1/2; ``x`` an expert by name, ``e`` by their number -> our
    expert index; ``h`` an ATMoE head.
    """
    dim = model.feat_dim
    c = dim // model.atmoe.heads if model.atmoe is not None else dim
    moe_channels = permute_blocks(ORDER, 0)  # BNNeck vectors of f (7C)
    moe_columns = permute_blocks(ORDER, 1)  # matrices reading f, or the seven features concatenated

    def fields(g: Groups) -> Groups:
        out = dict(g)
        if "m" in g:
            out["m"] = MODALITY[g["m"]]
        if "x" in g:
            out["x"] = EXPERT[g["x"]]
        if "e" in g:
            out["e"] = _expert(int(g["e"]))
        if "h" in g:
            out["h"] = int(g["h"])
        return out

    def expert_head(g: Groups) -> tuple[int, int]:
        return g["e"], g["h"]

    def expert_channels(g: Groups) -> tuple[slice]:
        return (slice(g["e"] * dim + g["h"] * c, g["e"] * dim + (g["h"] + 1) * c),)

    def first_expert_count(g: Groups) -> str | None:  # one counter for the 7 x H BatchNorms: expert R (0 in both)
        return "atmoe.expert_norm.num_batches_tracked" if g["e"] == g["h"] == 0 else None

    expert = _ATM + r"experts\.(?P<h>\d+)\.expertHead\.(?P<e>\d+)\.mlp\."
    table = [
        Rule(r"BACKBONE\.cv_embed", "sie_embed", transform=squeeze_dims(1)),  # (cams, 1, 768) -> (cams, 768)
        Rule(r"BACKBONE\.base\.(?P<rest>.+)", "encoder.visual.{rest}"),  # CLIP visual tower, same names
        Rule(r"(?P<m>rgb|nir|tir)_reduce\.0\.(?P<p>weight|bias)", "pife.{m}.norm.{p}"),
        Rule(r"(?P<m>rgb|nir|tir)_reduce\.1\.(?P<p>weight|bias)", "pife.{m}.proj.{p}"),
        Rule(rf"generalFusion\.(?P<x>{_E})_token", "hdm.queries", lambda g: (g["x"],), squeeze_dims(0, 1)),  # (1, 1, C)
        Rule(rf"generalFusion\.(?P<x>{_E})\.(?P<rest>.+)", "hdm.attention.{x}.{rest}"),
        Rule(_ATM + r"gating_network\.gate\.linear_re\.0\.weight", "atmoe.reduce.0.weight", transform=moe_columns),
        Rule(_ATM + r"gating_network\.gate\.linear_re\.0\.bias", "atmoe.reduce.0.bias"),
        Rule(_ATM + r"gating_network\.gate\.linear_re\.2\.(?P<p>\w+)", "atmoe.reduce.2.{p}"),
        Rule(_ATM + r"gating_network\.gate\.q_\.weight", "atmoe.query.weight"),
        Rule(_ATM + r"gating_network\.gate\.k_\.weight", "atmoe.key.weight"),
        Rule(expert + r"0\.weight", "atmoe.expert_weight", expert_head),
        Rule(expert + r"0\.bias", "atmoe.expert_bias", expert_head),
        Rule(expert + r"2\.num_batches_tracked", first_expert_count),
        Rule(expert + r"2\.(?P<p>\w+)", "atmoe.expert_norm.{p}", expert_channels),
        Rule(r"bottleneck_moe\.num_batches_tracked", "moe_neck.bottleneck.num_batches_tracked"),
        Rule(r"bottleneck_moe\.(?P<p>\w+)", "moe_neck.bottleneck.{p}", transform=moe_channels),
        Rule(r"classifier_moe\.weight", "moe_neck.classifier.weight", transform=moe_columns),
    ]
    if model.per_modality:  # DIRECT 0: a head per modality
        table += [
            Rule(r"bottleneck_(?P<m>[rnt])\.(?P<p>\w+)", "modality_necks.{m}.bottleneck.{p}"),
            Rule(r"classifier_(?P<m>[rnt])\.weight", "modality_necks.{m}.classifier.weight"),
        ]
    else:  # DIRECT 1: one head on [f_R, f_N, f_T]
        table += [
            Rule(r"bottleneck\.(?P<p>\w+)", "modality_neck.bottleneck.{p}"),
            Rule(r"classifier\.weight", "modality_neck.classifier.weight"),
        ]
    return table, fields


def _expert(e: int) -> int:
    if e >= len(ORDER):
        raise Unplaceable(f"expert {e}: DeMo has {len(ORDER)}")
    return ORDER[e]


def hints(state: Mapping[str, torch.Tensor], model: Any) -> list[str]:
    """What the file says about the settings it was trained with, where they contradict ``model``'s."""
    found = []
    direct0 = "classifier_r.weight" in state
    if direct0 != model.per_modality and ("classifier.weight" in state or direct0):
        mode, ours = ("DIRECT 0 (classifier_r)", "concat") if direct0 else ("DIRECT 1 (classifier)", "per_modality")
        found.append(
            f"the file was trained with {mode} but the recipe's modality_supervision is {ours!r}: "
            "use the recipe of the checkpoint's dataset (RGBNT201: DIRECT 1; RGBNT100, MSVR310: DIRECT 0)"
        )
    heads = {key.split(".")[3] for key in state if key.startswith("generalFusion.moe.experts.")}
    if model.atmoe is not None and heads and len(heads) != model.atmoe.heads:
        found.append(f"the file's ATMoE has {len(heads)} heads, the recipe's model_options.heads {model.atmoe.heads}")
    return found
