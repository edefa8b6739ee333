"""Packaging rules: folder name = import name, the data files ship, prep and train stay independent."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

from reidschemas.resources import data_root

REPO = Path(__file__).resolve().parents[1]
FOLDER_OF = {"reidprep": "prep", "reidtrain": "train", "reidschemas": "schemas"}


def test_pyproject_finds_packages_instead_of_listing_them():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert list(setuptools["packages"]) == ["find"], "packages are found, never listed by hand"
    assert "package-dir" not in setuptools
    assert sorted(setuptools["packages"]["find"]["where"]) == sorted(FOLDER_OF.values())


@pytest.mark.parametrize(("package", "folder"), sorted(FOLDER_OF.items()))
def test_each_top_level_folder_holds_the_package_of_its_import_name(package: str, folder: str):
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == REPO / folder / package
    assert [p.name for p in (REPO / folder).iterdir() if p.is_dir() and p.name != "__pycache__"] == [package]
    assert not (REPO / folder / "__init__.py").exists(), f"{folder}/ is a plain folder, not a package"


def test_templates_and_recipes_are_reachable_as_package_data():
    names = {entry.name for entry in data_root().joinpath("templates").iterdir()}
    assert {"attributes_pedestrian.json", "attributes_vehicle.json", "caption_pedestrian.txt"} <= names
    assert any(entry.name == "stmi-rgbnt201.yaml" for entry in data_root().joinpath("recipes").iterdir())
    assert (REPO / "data").resolve() == (REPO / "schemas" / "reidschemas" / "data")


def _imported_packages(folder: str) -> set[str]:
    imported = set()
    for source in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    return imported


def test_prep_and_train_do_not_import_each_other():
    assert "reidtrain" not in _imported_packages("prep")
    assert "reidprep" not in _imported_packages("train")
    assert not {"reidprep", "reidtrain"} & _imported_packages("schemas")
