"""RGBNT201 (person): ``RGBNT201/{train_171,test}/{RGB,NI,TI}/000287_cam1_0_05.jpg``, paired by file name."""

from __future__ import annotations

import re
from pathlib import Path

from reidprep.layouts.base import Candidate, FolderLayout, ScanResult, pair_by_name
from reidschemas import Modality

NAME = re.compile(r"^(\d{6})_cam(\d)_")


class RGBNT201(FolderLayout):
    name = "rgbnt201"
    protocol = "camera"
    top_folders = ("RGBNT201",)
    # Query and gallery are both the whole test folder; the same-id-same-camera rule removes the query itself.
    split_folders = {"train_171": ("train",), "test": ("query", "gallery")}

    def scan_split(self, split_dir: Path, result: ScanResult) -> None:
        dirs: dict[Modality, Path] = {"rgb": split_dir / "RGB", "nir": split_dir / "NI", "tir": split_dir / "TI"}
        for paths in pair_by_name(dirs, result):
            rgb = paths["rgb"]
            match = NAME.match(rgb.name)
            if match is None:
                result.report("error", "unparsable_name", f"name does not match {NAME.pattern}", rgb)
                continue
            result.candidates.append(Candidate(split_dir.name, rgb.stem, int(match[1]), int(match[2]), None, paths))
