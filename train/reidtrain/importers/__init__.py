"""Importers of the authors' released checkpoints: their state-dict names mapped onto our models, one module per
format (``demo``, ``mambapro``), the placement engine (``mapping``) and the run-folder writer (``importer``)."""

from reidtrain.importers.importer import FORMATS, ImportRefused, ImportSummary, import_checkpoint

__all__ = ["FORMATS", "ImportRefused", "ImportSummary", "import_checkpoint"]
