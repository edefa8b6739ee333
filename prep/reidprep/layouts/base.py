"""What every dataset layout shares: locating the dataset, listing images, pairing modalities, the scan result."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from reidschemas import Box, DatasetName, LedgerEntry, Modality, ObjectKind, Protocol, Split

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


@dataclass(frozen=True)
class Candidate:
    """A triplet found on disk, before its images are checked and its records are made."""

    split_folder: str
    key: str
    """Unique within the split folder, e.g. ``000287_cam1_0_05`` or ``0002/0002_s002_v0_000``."""
    pid: int
    camid: int
    sceneid: int | None
    paths: dict[Modality, Path]
    side_by_side: bool = False
    """RGBNT100: one file holds RGB, NIR and TIR side by side (the crop boxes come from its width)."""
    boxes: dict[Modality, Box] | None = None
    """Crop boxes given by the dataset itself (the generic layout's manifest)."""


@dataclass
class ScanResult:
    """Candidates found by a layout and the problems met on the way (the ledger)."""

    candidates: list[Candidate] = field(default_factory=list)
    problems: list[LedgerEntry] = field(default_factory=list)

    def report(
        self,
        severity: Literal["error", "warning"],
        error_type: str,
        reason: str,
        path: Path | None = None,
        sample_id: str | None = None,
    ) -> None:
        self.problems.append(
            LedgerEntry(
                stage="index",
                severity=severity,
                error_type=error_type,
                reason=reason,
                path=None if path is None else str(path),
                sample_id=sample_id,
            )
        )


class Layout(ABC):
    """Where a dataset's triplets come from: a benchmark's folders or the generic layout's manifest file."""

    name: ClassVar[DatasetName]
    split_folders: ClassVar[dict[str, tuple[Split, ...]]]
    """Split folder (a candidate's ``split_folder``) -> the splits its triplets belong to (RGBNT201's ``test`` is
    both query and gallery)."""
    object_kind: ObjectKind | None = None
    """Set by the generic layout only (its records name their kind); a benchmark's kind is its dataset's."""
    protocol: ClassVar[Protocol]
    """How its query and gallery are scored, as the reference code does: "camera" removes the gallery items with
    the query's id and camera; "scene" (MSVR310 only) those with its id and scene, and then every row needs a scene."""

    @abstractmethod
    def locate(self, root: Path) -> Path:
        """What :meth:`scan` reads under the ``root`` the user gave; ``FileNotFoundError`` saying what was expected."""

    @abstractmethod
    def scan(self, dataset_dir: Path) -> ScanResult:
        """Every triplet candidate of the dataset, and a report of what cannot be used."""


class FolderLayout(Layout):
    """A benchmark's on-disk layout: one folder per split (see ``shared/reference/datasets.md``)."""

    top_folders: ClassVar[tuple[str, ...]]
    """Accepted names of the dataset's own folder under the root (e.g. ``MSVR310`` or ``msvr310``)."""

    def locate(self, root: Path) -> Path:
        """The dataset folder: ``root/<top folder>``, or ``root`` itself when it already is that folder."""
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
        for name in self.top_folders:
            if (root / name).is_dir():
                return root / name
        if any((root / folder).is_dir() for folder in self.split_folders):
            return root
        expected = " or ".join(f"{root}/{name}/{{{','.join(self.split_folders)}}}" for name in self.top_folders)
        raise FileNotFoundError(f"no {self.name} dataset under {root}: expected {expected}")

    def scan(self, dataset_dir: Path) -> ScanResult:
        result = ScanResult()
        found_any = False
        for folder in self.split_folders:
            split_dir = dataset_dir / folder
            if not split_dir.is_dir():
                result.report("error", "missing_split_folder", f"split folder {folder!r} not found", split_dir)
                continue
            found_any = True
            self.scan_split(split_dir, result)
        if not found_any:
            raise FileNotFoundError(
                f"{dataset_dir} has none of the {self.name} split folders {sorted(self.split_folders)}"
            )
        return result

    @abstractmethod
    def scan_split(self, split_dir: Path, result: ScanResult) -> None:
        """Add the candidates of one split folder to ``result``; report what cannot be used."""


def list_images(folder: Path, result: ScanResult) -> list[Path]:
    """Image files of ``folder`` sorted by name; hidden files are skipped, other files reported as warnings."""
    images = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            result.report("warning", "not_an_image", "file is not an image and was ignored", path)
    return images


def pair_by_name(
    modality_dirs: dict[Modality, Path],
    result: ScanResult,
    pair_key: Callable[[str], str] = lambda name: name,
) -> list[dict[Modality, Path]]:
    """Group the images of the modality folders into triplets by file name, never by listing order.

    A name present in some folders only is reported as ``missing_modality`` and left out. ``pair_key`` maps a
    file name to the key that must match across folders (the plain name unless a layout says otherwise).
    """
    by_key: dict[str, dict[Modality, Path]] = {}
    for modality, folder in modality_dirs.items():
        if not folder.is_dir():
            result.report("error", "missing_modality_folder", f"{modality} folder not found", folder)
            return []
        for path in list_images(folder, result):
            key = pair_key(path.name)
            slot = by_key.setdefault(key, {})
            if modality in slot:
                result.report("error", "duplicate_name", f"two {modality} images pair as {key!r}", path)
                continue
            slot[modality] = path
    triplets = []
    for key in sorted(by_key):
        paths = by_key[key]
        missing = [m for m in modality_dirs if m not in paths]
        if missing:
            present = next(iter(paths.values()))
            result.report(
                "error",
                "missing_modality",
                f"no {' / '.join(missing)} image pairs with {present.name} "
                f"(present: {', '.join(m for m in modality_dirs if m in paths)})",
                present,
            )
            continue
        triplets.append(paths)
    return triplets
