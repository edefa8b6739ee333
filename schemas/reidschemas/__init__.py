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
    PROTOCOL_RULES,
    PROTOCOLS,
    SPLITS,
    Box,
    DatasetName,
    LedgerEntry,
    Modality,
    ObjectKind,
    Protocol,
    SampleRecord,
    Split,
    describe_protocol,
)

__all__ = [
    "DATASETS",
    "DATASET_KIND",
    "MODALITIES",
    "PROTOCOLS",
    "PROTOCOL_RULES",
    "SPLITS",
    "AttributeSet",
    "AttributeSpec",
    "AttributeTemplate",
    "AttributeValue",
    "Box",
    "ConfigError",
    "DatasetName",
    "LedgerEntry",
    "Modality",
    "ObjectKind",
    "PipelineConfig",
    "Protocol",
    "SampleRecord",
    "Split",
    "apply_overrides",
    "attribute_model",
    "describe_protocol",
    "is_unknown",
    "load_config",
    "load_template",
]
