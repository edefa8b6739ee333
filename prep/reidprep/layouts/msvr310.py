"""MSVR310 (vehicle): ``MSVR310/{bounding_box_train,query3,bounding_box_test}/<id>/{vis,ni,th}/<name>.jpg``.

Name ``0002_s002_v0_000.jpg``: id, scene (time span), view (camera 0-7), index. Evaluation drops same id AND same
scene (the ``scene`` protocol); the scene is kept in the record. A name whose id and view can be read but no scene
(``0002_v0_000.jpg``) gives a candidate without scene, which the index reports as a ``missing_scene`` error.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidprep.layouts.base import Candidate, FolderLayout, ScanResult, pair_by_name
from reidschemas import Modality

NAME = re.compile(r"^(\d{4})_s(\d{3})_v(\d)_(\d{3})")
NO_SCENE = re.compile(r"^(\d{4})_(?!s\d)(?:.*_)?v(\d)_")


class MSVR310(FolderLayout):
    name = "msvr310"
    protocol = "scene"
    top_folders = ("MSVR310", "msvr310")
    split_folders = {
        "bounding_box_train": ("train",),
        "query3": ("query",),
        "bounding_box_test": ("gallery",),
    }

    def scan_split(self, split_dir: Path, result: ScanResult) -> None:
        for id_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            dirs: dict[Modality, Path] = {"rgb": id_dir / "vis", "nir": id_dir / "ni", "tir": id_dir / "th"}
            for paths in pair_by_name(dirs, result):
                rgb = paths["rgb"]
                match = NAME.match(rgb.name) or NO_SCENE.match(rgb.name)
                if match is None:
                    result.report("error", "unparsable_name", f"name does not match {NAME.pattern}", rgb)
                    continue
                if match[1] != id_dir.name:
                    result.report(
                        "error",
                        "id_folder_mismatch",
                        f"file id {match[1]} is inside id folder {id_dir.name}",
                        rgb,
                    )
                    continue
                if match.re is NAME:
                    pid, scene, view = int(match[1]), int(match[2]), int(match[3])
                else:  # id and view only: the index reports the missing scene
                    pid, scene, view = int(match[1]), None, int(match[2])
                key = f"{id_dir.name}/{rgb.stem}"
                result.candidates.append(Candidate(split_dir.name, key, pid, view, scene, paths))
