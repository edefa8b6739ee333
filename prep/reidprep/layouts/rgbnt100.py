"""RGBNT100 (vehicle): ``RGBNT100/rgbir/{bounding_box_train,query,bounding_box_test}/0561_c0001_006.jpg``.

One 768x128 file per triplet holds RGB, NIR and TIR side by side (x = 0-256, 256-512, 512-768).
"""

from __future__ import annotations

import re
from pathlib import Path

from reidprep.layouts.base import Candidate, FolderLayout, ScanResult, list_images
from reidschemas import Modality

NAME = re.compile(r"([-\d]+)_c([-\d]+)")


class RGBNT100(FolderLayout):
    name = "rgbnt100"
    protocol = "camera"
    top_folders = ("RGBNT100/rgbir", "rgbnt100/rgbir", "rgbir")
    split_folders = {"bounding_box_train": ("train",), "query": ("query",), "bounding_box_test": ("gallery",)}

    def scan_split(self, split_dir: Path, result: ScanResult) -> None:
        for path in list_images(split_dir, result):
            match = NAME.search(path.name)
            if match is None:
                result.report("error", "unparsable_name", f"name does not match {NAME.pattern}", path)
                continue
            pid, camid = int(match[1]), int(match[2])
            if pid == -1:  # Market-1501's junk convention
                result.report("warning", "junk_id", "id -1 marks a junk image; ignored", path)
                continue
            paths: dict[Modality, Path] = {"rgb": path, "nir": path, "tir": path}
            result.candidates.append(Candidate(split_dir.name, path.stem, pid, camid, None, paths, side_by_side=True))
