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

from collections.abc import Callable, Mapping
from typing import Any

import torch

from reidtrain.importers.mapping import MODALITY, Groups, Rule, Unplaceable

__all__ = ["CAMERA_KEY", "CLASSIFIER_KEYS", "MODEL", "SOURCE", "hints", "name_map"]

MODEL = "mambapro"
SOURCE = "github.com/924973292/MambaPro @ 6dc4cb7ad7de034fa10482dbf79a3bab1faddaf2"
CAMERA_KEY = "BACKBONE.cv_embed"
CLASSIFIER_KEYS = ("classifier_fuse.weight", "classifier.weight", "BACKBONE.classifier.weight")  # rows = training ids

LINEAR = {"0": "fc1", "3": "fc2"}  # their prompt blocks: Linear, QuickGELU, Dropout, Linear
_PFA = r"BACKBONE\.base\.transformer\.resblocks\.(?P<pfa>\d+)\."  # a block, numbered for the PFA
_SRP = r"BACKBONE\.base\.transformer\.resblocks\.(?P<srp>\d+)\."  # the same, numbered for the prompts
_MIXER = r"AAM\.ma_block\.(?P<b>\d+)\.SSM_(?P<kind>intra|inter)\."
_INTRA, _INTER = (rf"AAM\.ma_block\.(?P<b>\d+)\.SSM_(?P<kind>{kind})\." for kind in ("intra", "inter"))


def name_map(model: Any) -> tuple[list[Rule], Callable[[Groups], Groups]]:
    """(the rules, the group conversion) for ``model``: our MambaPro as configured (start layers, MA blocks and mode,
    class-token supervision).

    Groups: ``pfa`` / ``srp`` a block -> our PFA / prompt layer (``prev``: the layer before); ``m`` a modality
    (rgb/nir/tir or r/n/t) -> 0/1/2; ``k`` a Linear of their prompt blocks -> fc1/fc2; ``b`` and ``kind`` an MA block
    -> our ``mixer`` index.
    """
    pfa_start = model.pfa_start_layer
    srp_start = model.srp.start_layer if model.srp is not None else 0
    joints = list(dict.fromkeys(m.joint for m in model.ma.mixers)) if model.ma is not None else []  # one MA block

    def fields(g: Groups) -> Groups:
        out = dict(g)
        if "m" in g:
            out["m"] = MODALITY[g["m"]]
        if "k" in g:
            out["k"] = LINEAR[g["k"]]
        if "pfa" in g:
            out["pfa"] = int(g["pfa"]) - pfa_start
        if "srp" in g:
            out["srp"] = int(g["srp"]) - srp_start
            out["prev"] = out["srp"] - 1
        if "b" in g:
            joint = g["kind"] == "inter"
            if joint not in joints:
                raise Unplaceable(f"our MA as configured has no {g['kind']}-modality blocks")
            out["mixer"] = int(g["b"]) * len(joints) + joints.index(joint)
        return out

    def residual(g: Groups) -> str | None:  # block i's RP refines block i-1's fused prompts; block 0's is never used
        return None if g["srp"] == 0 else "srp.residual.{prev}.{k}.{p}".format(**g)

    table = [
        Rule(_PFA + r"adapter_ffn\.0\.(?P<p>weight|bias)", "pfa.{pfa}.up.{p}"),
        Rule(_PFA + r"adapter_ffn\.2\.(?P<p>weight|bias)", "pfa.{pfa}.down.{p}"),
        Rule(_SRP + r"adapter_prompt_(?P<m>rgb|nir|tir)", "srp.prompts", lambda g: (g["srp"], g["m"])),  # (k, width)
        Rule(_SRP + r"adapter_(?P<m>[rnt])\.(?P<k>[03])\.(?P<p>weight|bias)", "srp.transfer.{srp}.{m}.{k}.{p}"),
        Rule(_SRP + r"adapter_transfer\.(?P<k>[03])\.(?P<p>weight|bias)", residual),
        Rule(r"BACKBONE\.base\.(?P<rest>.+)", "encoder.visual.{rest}"),  # CLIP visual tower, same names
        Rule(r"BACKBONE\.cv_embed", "sie_embed"),  # (cams, 768)
        Rule(_MIXER + r"in_proj_(?P<m>[rnt])\.weight", "ma.mixers.{mixer}.in_proj.{m}.weight"),
        Rule(_MIXER + r"conv2d_(?P<m>[rnt])\.(?P<layer>[01])\.(?P<p>\w+)", "ma.mixers.{mixer}.conv.{m}.{layer}.{p}"),
        Rule(_INTRA + r"SSM_(?P<m>[rnt])_f\.(?P<p>.+)", "ma.mixers.{mixer}.ssm.{m}.{p}"),  # forward scans only
        Rule(_INTER + r"SSM_2_f\.(?P<p>.+)", "ma.mixers.{mixer}.ssm.0.{p}"),
        Rule(_MIXER + r"out_proj\.weight", "ma.mixers.{mixer}.out_proj.weight"),
        Rule(r"AAM\.linear_reduction_(?P<m>[rnt])\.0\.(?P<p>weight|bias)", "ma.norms.{m}.{p}"),
        Rule(r"AAM\.linear_reduction_(?P<m>[rnt])\.1\.(?P<p>weight|bias)", "ma.reductions.{m}.{p}"),
        Rule(r"bottleneck_fuse\.(?P<p>\w+)", "bottleneck_ma.{p}"),
        Rule(r"classifier_fuse\.weight", "classifier_ma.weight"),
    ]
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
    return table, fields


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
