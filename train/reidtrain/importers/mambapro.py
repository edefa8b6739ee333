"""The MambaPro authors' checkpoint names -> our :class:`reidtrain.models.mambapro.MambaPro`.

Key names and shapes were read from the authors' public code, github.com/924973292/MambaPro at commit
6dc4cb7ad7de034fa10482dbf79a3bab1faddaf2 (``modeling/make_model.py``, ``modeling/clip/model.py``,
``modeling/fusion_part/AAM.py``, ``modeling/fusion_part/mamba.py``); none of it is copied here. Their
``model.state_dict()`` holds:

- ``BACKBONE.base.*``: OpenAI CLIP's visual tower under open_clip's names, and in every block i the PFA
  ``adapter_ffn.{0, 2}`` (our ``pfa.i.{up, down}``) and the prompt parameters: ``adapter_prompt_{rgb,nir,tir}`` (k,
  width) (our ``srp.prompts[i, m]``), the transfer blocks ``adapter_{r,n,t}.{0, 3}`` (index 2 is a dropout; our
  ``srp.transfer.i.m.{fc1, fc2}``) and the residual block ``adapter_transfer.{0, 3}``, which block i applies to the
  fused prompts of block i - 1 (our ``srp.residual.(i-1)``); block 0 never calls its copy, so it is dropped.
- ``BACKBONE.cv_embed`` (cameras, 768): SIE; ``BACKBONE.bottleneck`` / ``BACKBONE.classifier``: the shared
  per-class-token head (D) that ``DIRECT 0`` trains; ``bottleneck`` / ``classifier``: the head on f_cls (3D) that
  ``DIRECT 1`` trains. The head the mode does not train is dropped.
- ``AAM.ma_block.b.{SSM_intra, SSM_inter}``: MA block b, our ``ma.mixers.(2b)`` and ``ma.mixers.(2b + 1)``; inside,
  ``in_proj_{r,n,t}`` -> ``in_proj.{0,1,2}``, ``conv2d_{r,n,t}.{0: Conv2d, 1: BatchNorm2d}`` -> ``conv.{0,1,2}``,
  ``SSM_{r,n,t}_f`` (intra) / ``SSM_2_f`` (inter) -> ``ssm.{0,1,2}`` / ``ssm.0`` (the SSM keeps its names:
  ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_norm``), ``out_proj``. The backward scans of ``MAMBA_BI``
  (``SSM_*_b``) have no place in our model and are refused.
- ``AAM.linear_reduction_{r,n,t}.{0: LayerNorm, 1: Linear}`` -> ``ma.{norms, reductions}.{0,1,2}``;
  ``bottleneck_fuse`` / ``classifier_fuse`` -> ``bottleneck_ma`` / ``classifier_ma``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from reidtrain.importers.mapping import Rule, Unplaceable

__all__ = ["CAMERA_KEY", "CLASSIFIER_KEYS", "MODEL", "SOURCE", "hints", "rules"]

MODEL = "mambapro"
SOURCE = "github.com/924973292/MambaPro @ 6dc4cb7ad7de034fa10482dbf79a3bab1faddaf2"
CAMERA_KEY = "BACKBONE.cv_embed"
CLASSIFIER_KEYS = ("classifier_fuse.weight", "classifier.weight", "BACKBONE.classifier.weight")  # rows = training ids

MODALITY = {"r": 0, "n": 1, "t": 2, "rgb": 0, "nir": 1, "tir": 2}
LINEAR = {"0": "fc1", "3": "fc2"}  # their prompt blocks: Linear, QuickGELU, Dropout, Linear
_BLOCK = r"BACKBONE\.base\.transformer\.resblocks\.(?P<i>\d+)\."
_MIXER = r"AAM\.ma_block\.(?P<b>\d+)\.SSM_(?P<kind>intra|inter)\."


def rules(model: Any) -> list[Rule]:
    """The name map for ``model`` (our MambaPro as configured: start layers, MA blocks and mode, supervision)."""
    pfa_start = model.pfa_start_layer
    srp = model.srp
    srp_start = srp.start_layer if srp is not None else 0
    joints = list(dict.fromkeys(m.joint for m in model.ma.mixers)) if model.ma is not None else []  # one MA block
    per_block = len(joints)

    def mixer(g: dict[str, str]) -> int:  # their (block, intra|inter) -> our ma.mixers index
        joint = g["kind"] == "inter"
        if joint not in joints:
            raise Unplaceable(f"our MA as configured has no {g['kind']}-modality blocks")
        return int(g["b"]) * per_block + joints.index(joint)

    def residual(g: dict[str, str]) -> str | None:  # block i's RP refines block i-1's fused prompts
        layer = int(g["i"]) - srp_start
        return None if layer == 0 else f"srp.residual.{layer - 1}.{LINEAR[g['k']]}.{g['p']}"

    table = [
        Rule(_BLOCK + r"adapter_ffn\.0\.(?P<p>weight|bias)", lambda g: f"pfa.{int(g['i']) - pfa_start}.up.{g['p']}"),
        Rule(_BLOCK + r"adapter_ffn\.2\.(?P<p>weight|bias)", lambda g: f"pfa.{int(g['i']) - pfa_start}.down.{g['p']}"),
        Rule(_BLOCK + r"adapter_prompt_(?P<m>rgb|nir|tir)", "srp.prompts",
             lambda g: (int(g["i"]) - srp_start, MODALITY[g["m"]])),  # fmt: skip
        Rule(_BLOCK + r"adapter_(?P<m>[rnt])\.(?P<k>[03])\.(?P<p>weight|bias)",
             lambda g: f"srp.transfer.{int(g['i']) - srp_start}.{MODALITY[g['m']]}.{LINEAR[g['k']]}.{g['p']}"),  # fmt: skip
        Rule(_BLOCK + r"adapter_transfer\.(?P<k>[03])\.(?P<p>weight|bias)", residual),
        Rule(r"BACKBONE\.base\.(?P<rest>.+)", "encoder.visual.{rest}"),  # CLIP visual tower, same names
        Rule(r"BACKBONE\.cv_embed", "sie_embed"),  # (cams, 768)
        Rule(_MIXER + r"in_proj_(?P<m>[rnt])\.weight", lambda g: f"ma.mixers.{mixer(g)}.in_proj.{MODALITY[g['m']]}.weight"),
        Rule(_MIXER + r"conv2d_(?P<m>[rnt])\.(?P<k>[01])\.(?P<p>\w+)",
             lambda g: f"ma.mixers.{mixer(g)}.conv.{MODALITY[g['m']]}.{g['k']}.{g['p']}"),  # fmt: skip
        Rule(r"AAM\.ma_block\.(?P<b>\d+)\.SSM_(?P<kind>intra)\.SSM_(?P<m>[rnt])_f\.(?P<p>.+)",
             lambda g: f"ma.mixers.{mixer(g)}.ssm.{MODALITY[g['m']]}.{g['p']}"),  # fmt: skip
        Rule(r"AAM\.ma_block\.(?P<b>\d+)\.SSM_(?P<kind>inter)\.SSM_2_f\.(?P<p>.+)", lambda g: f"ma.mixers.{mixer(g)}.ssm.0.{g['p']}"),
        Rule(_MIXER + r"out_proj\.weight", lambda g: f"ma.mixers.{mixer(g)}.out_proj.weight"),
        Rule(r"AAM\.linear_reduction_(?P<m>[rnt])\.0\.(?P<p>weight|bias)", lambda g: f"ma.norms.{MODALITY[g['m']]}.{g['p']}"),
        Rule(r"AAM\.linear_reduction_(?P<m>[rnt])\.1\.(?P<p>weight|bias)", lambda g: f"ma.reductions.{MODALITY[g['m']]}.{g['p']}"),
        Rule(r"bottleneck_fuse\.(?P<p>\w+)", "bottleneck_ma.{p}"),
        Rule(r"classifier_fuse\.weight", "classifier_ma.weight"),
    ]  # fmt: skip
    if model.cls_supervision == "per_modality":  # DIRECT 0: the shared per-class-token head of the backbone
        table += [
            Rule(r"BACKBONE\.bottleneck\.(?P<p>\w+)", "bottleneck.{p}"),
            Rule(r"BACKBONE\.classifier\.weight", "classifier.weight"),
            Rule(r"bottleneck\.(?P<p>\w+)", None),  # the f_cls head, untrained under DIRECT 0
            Rule(r"classifier\.weight", None),
        ]
    else:  # DIRECT 1: the head on f_cls
        table += [
            Rule(r"bottleneck\.(?P<p>\w+)", "bottleneck.{p}"),
            Rule(r"classifier\.weight", "classifier.weight"),
            Rule(r"BACKBONE\.bottleneck\.(?P<p>\w+)", None),  # the per-class-token head, untrained under DIRECT 1
            Rule(r"BACKBONE\.classifier\.weight", None),
        ]
    return table


def _batches(state: Mapping[str, torch.Tensor], key: str) -> int | None:
    value = state.get(key)
    return None if value is None else int(value)


def hints(state: Mapping[str, torch.Tensor], model: Any) -> list[str]:
    """What the file says about the settings it was trained with, where they contradict ``model``'s.

    Both class-token heads are in every file; the one the run trained has counted batches, the other none.
    """
    per_token, on_cls = (_batches(state, f"{p}bottleneck.num_batches_tracked") for p in ("BACKBONE.", ""))
    if per_token is None or on_cls is None:
        return []
    direct0 = per_token > 0 and on_cls == 0
    direct1 = on_cls > 0 and per_token == 0
    ours = model.cls_supervision
    if (direct0 and ours != "per_modality") or (direct1 and ours != "concat"):
        mode, wanted = ("DIRECT 0", "per_modality") if direct0 else ("DIRECT 1", "concat")
        return [
            f"the file was trained with {mode} (BACKBONE.bottleneck saw {per_token} batches, bottleneck {on_cls}) "
            f"but the recipe's cls_supervision is {ours!r}, not {wanted!r}: use the recipe of the checkpoint's "
            "dataset (RGBNT201: DIRECT 1; RGBNT100, MSVR310: DIRECT 0)"
        ]
    return []
