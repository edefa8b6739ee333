"""Records and configuration shared by ``reidprep`` and ``reidtrain``."""

from reidschemas.attributes import (
    AttributeSet,
    AttributeSpec,
    AttributeTemplate,
    AttributeValue,
    attribute_model,
    is_unknown,
    load_template,
)
from reidschemas.config import PipelineConfig, apply_overrides, load_config
from reidschemas.overrides import ConfigError
from reidschemas.records import (
    DATASET_KIND,
    DATASETS,
    MODALITIES,
    SPLITS,
    DatasetName,
    LedgerEntry,
    Modality,
    ObjectKind,
    SampleRecord,
    Split,
)

__all__ = [
    "DATASETS",
    "DATASET_KIND",
    "MODALITIES",
    "SPLITS",
    "AttributeSet",
    "AttributeSpec",
    "AttributeTemplate",
    "AttributeValue",
    "ConfigError",
    "DatasetName",
    "LedgerEntry",
    "Modality",
    "ObjectKind",
    "PipelineConfig",
    "SampleRecord",
    "Split",
    "apply_overrides",
    "attribute_model",
    "is_unknown",
    "load_config",
    "load_template",
]
