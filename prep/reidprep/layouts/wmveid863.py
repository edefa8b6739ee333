"""WMVEID863 / MSVWild863 (vehicle): ``WMVEID863/{train,query,test}/<id folder>/{vis,ni,th}/<name>.jpg``.

Name ``0001_v1_n0_s001_003.jpg``: id, view (camera), night flag, scene, index; the id comes from the folder.
Known dirt, handled here: odd names such as ``0865_0865_vis_v1_n0_03.jpg`` (kept with a warning when the view can
still be read, scene unknown), a modality missing for a triplet (reported), ids in both train and test (reported by
the index stage, optionally dropped from train). Modalities are paired by name with the modality word removed, so
``..._vis_...`` pairs with ``..._ni_...``; never by directory order.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidprep.layouts.base import Candidate, FolderLayout, ScanResult, pair_by_name
from reidschemas import Modality

NAME = re.compile(r"^(\d{4})_v(\d)_n(\d)_s(\d{3})_(\d{3})\.jpg$")
LENIENT_VIEW = re.compile(r"_v(\d)_n(\d)_")
_MODALITY_WORD = re.compile(r"_(vis|ni|nir|th|tir)(?=_)", re.IGNORECASE)


def pair_key(name: str) -> str:
    return _MODALITY_WORD.sub("", name)


class WMVEID863(FolderLayout):
    name = "wmveid863"
    protocol = "camera"  # test scenes are nearly all 999: recorded, never used for scoring (the reference code)
    top_folders = ("WMVEID863", "wmveid863", "MSVWild863")
    split_folders = {"train": ("train",), "query": ("query",), "test": ("gallery",)}

    def scan_split(self, split_dir: Path, result: ScanResult) -> None:
        for id_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if not id_dir.name.isdigit():
                result.report("error", "unparsable_id_folder", "id folder name is not a number", id_dir)
                continue
            pid = int(id_dir.name)
            dirs: dict[Modality, Path] = {"rgb": id_dir / "vis", "nir": id_dir / "ni", "tir": id_dir / "th"}
            for paths in pair_by_name(dirs, result, pair_key):
                rgb = paths["rgb"]
                key = f"{id_dir.name}/{pair_key(rgb.name).rsplit('.', 1)[0]}"
                match = NAME.match(rgb.name)
                if match is not None:
                    camid, scene = int(match[2]), int(match[4])
                else:
                    lenient = LENIENT_VIEW.search(rgb.name)
                    if lenient is None:
                        result.report("error", "unparsable_name", f"name does not match {NAME.pattern}", rgb)
                        continue
                    camid, scene = int(lenient[1]), None
                    result.report(
                        "warning",
                        "odd_name",
                        f"name does not match {NAME.pattern}; view read, scene unknown",
                        rgb,
                    )
                result.candidates.append(Candidate(split_dir.name, key, pid, camid, scene, paths))
