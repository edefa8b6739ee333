"""Packaging rules: every package is installed, the data files ship, prep and train stay independent."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from reidschemas.resources import data_root

REPO = Path(__file__).resolve().parents[1]
FOLDER_OF = {"reidprep": "prep", "reidtrain": "train", "reidschemas": "schemas"}


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for package, folder in FOLDER_OF.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *relative)))
    assert found <= listed, f"add these to [tool.setuptools] packages: {sorted(found - listed)}"


def test_templates_are_reachable_as_package_data():
    templates = data_root().joinpath("templates")
    names = {entry.name for entry in templates.iterdir()}
    assert {"attributes_pedestrian.json", "attributes_vehicle.json", "caption_pedestrian.txt"} <= names


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
