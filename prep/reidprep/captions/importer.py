"""The ``import`` provider: released captions (IDEA, NEXT) instead of calling a model.

A release is a folder of ``{train,test}_{RGB,NI,TI}.json`` files, each a JSON list of
``{"item": <image file name>, "description": <caption>}``; query and gallery share ``test_*``. Items are matched
by the image's file name within the split file. Released captions have no attributes and no fused caption: the
fused caption of an imported triplet is its RGB caption.

``rows`` gives the captions stage's rows: each caption is validated against unknown attributes (problems become
notes, never failures) and its CLIP tokens counted. Validation is cached per distinct (caption, kind, modality)
and token counts per distinct word (:mod:`reidprep.captions.clip_tokens`), so a release is a lookup plus about
30 us per caption (``bench/prep_scaling.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

from reidprep.captions.merge import Target
from reidprep.captions.validate import clip_token_count, length_note, validate_caption
from reidprep.stage import Failure, UnitResult, WorkUnit
from reidschemas import MODALITIES, AttributeSet, Modality, ObjectKind, SampleRecord, attribute_model

FILE_MODALITY: dict[Modality, str] = {"rgb": "RGB", "nir": "NI", "tir": "TI"}
TARGETS: tuple[Target, ...] = (*MODALITIES, "fused")
"""The caption columns of the captions stage (``caption_<target>``, ``tokens_<target>``)."""


@cache
def _unknown(kind: ObjectKind) -> AttributeSet:
    return attribute_model(kind).unknown()


@lru_cache(maxsize=1 << 16)
def _problems(text: str, kind: ObjectKind, modality: Modality) -> tuple[str, ...]:
    """What validation says of a released caption (no attribute is known): only the text's own problems."""
    return tuple(validate_caption(text, _unknown(kind), kind, modality))


class ReleasedCaptions:
    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise FileNotFoundError(f"released captions folder {folder} not found (captions.import_dir)")
        self.folder = folder
        self.captions: dict[tuple[str, Modality], dict[str, str]] = {}
        found = False
        for split in ("train", "test"):
            for modality in MODALITIES:
                path = folder / f"{split}_{FILE_MODALITY[modality]}.json"
                if path.is_file():
                    found = True
                    self.captions[(split, modality)] = self._load(path)
        if not found:
            raise FileNotFoundError(f"{folder} has none of the files {{train,test}}_{{RGB,NI,TI}}.json")

    @staticmethod
    def _load(path: Path) -> dict[str, str]:
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of {{item, description}} objects")
        table: dict[str, str] = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not {"item", "description"} <= set(entry):
                raise ValueError(f"{path}: entry {i} is not an {{item, description}} object")
            table.setdefault(Path(str(entry["item"])).name, str(entry["description"]))
        return table

    def identity(self) -> dict[str, object]:
        return {"provider": "import", "folder": str(self.folder.resolve()), "files": sorted(
            f"{split}_{FILE_MODALITY[m]}.json" for split, m in self.captions
        )}  # fmt: skip

    def lookup(self, record: SampleRecord) -> dict[Modality, str]:
        """The released caption of each modality; KeyError with the reason when one is missing."""
        split = "train" if record.split == "train" else "test"
        found: dict[Modality, str] = {}
        for modality in MODALITIES:
            table = self.captions.get((split, modality))
            name = Path(record.path(modality)).name
            if table is None:
                raise KeyError(f"no {split}_{FILE_MODALITY[modality]}.json in {self.folder}")
            if name not in table:
                raise KeyError(f"no released caption for {name} in {split}_{FILE_MODALITY[modality]}.json")
            found[modality] = table[name]
        return found

    def rows(self, units: Sequence[WorkUnit]) -> list[UnitResult]:
        """The captions stage's row of each unit, or its ``MissingCaption`` failure, in order.

        ``notes`` lists each modality's validation problems (``"<modality>: <problem>"``), then each caption
        longer than CLIP's context (``"<target> caption: <note>"``); ``attributes`` and the unknown rates are null.
        """
        out: list[UnitResult] = []
        for unit in units:
            try:
                captions: dict[Target, str] = dict(self.lookup(unit.record).items())
            except KeyError as exc:
                out.append(Failure(unit.key, str(exc.args[0]), "MissingCaption"))
                continue
            captions["fused"] = captions["rgb"]
            kind = unit.record.kind
            notes = [f"{m}: {problem}" for m in MODALITIES for problem in _problems(captions[m], kind, m)]
            counted = {text: clip_token_count(text) for text in set(captions.values())}
            tokens = {target: counted[captions[target]] for target in TARGETS}
            for target in TARGETS:
                note = length_note(captions[target], tokens[target])
                if note is not None:
                    notes.append(f"{target} caption: {note}")
            out.append(
                {
                    "triplet_key": unit.key,
                    "sample_id": unit.record.sample_id,
                    "kind": kind,
                    **{f"caption_{target}": captions[target] for target in TARGETS},
                    **{f"tokens_{target}": tokens[target] for target in TARGETS},
                    "attributes": None,
                    "view_attributes": None,
                    **{f"unknown_{when}_{m}": None for when in ("before", "after") for m in MODALITIES},
                    "notes": json.dumps(notes),
                }
            )
        return out
