"""The ``import`` provider: released captions (IDEA, NEXT) instead of calling a model.

A release is a folder of ``{train,test}_{RGB,NI,TI}.json`` files, each a JSON list of
``{"item": <image file name>, "description": <caption>}``; query and gallery share ``test_*``. Items are matched
by the image's file name within the split file. Released captions have no attributes and no fused caption: the
fused caption of an imported triplet is its RGB caption.
"""

from __future__ import annotations

import json
from pathlib import Path

from reidschemas import MODALITIES, Modality, SampleRecord

FILE_MODALITY: dict[Modality, str] = {"rgb": "RGB", "nir": "NI", "tir": "TI"}


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
