"""The on-disk formats: one typed, validating reader and atomic writer per record file.

`ExportManifest` (manifest.json of an export folder), `EngineRecord` (engine.json of an engine
folder), `BankManifest` / `BankVideo` (formats/bank.py: a feature bank), and the `Runtime` /
`Precision` names they use. Nobody else parses these files.
"""

from acar_deploy.formats.engine import (
    ENGINE_FILE,
    ENGINE_FORMAT,
    ENGINE_FORMAT_VERSION,
    EngineRecord,
    folder_kind,
    verify_folder,
)
from acar_deploy.formats.enums import Precision, Runtime
from acar_deploy.formats.manifest import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    MANIFEST_FILE,
    PART_NAMES,
    ExportGeometry,
    ExportManifest,
    GraphPartRecord,
    Normalization,
    TensorRecord,
)

__all__ = [
    "ENGINE_FILE",
    "ENGINE_FORMAT",
    "ENGINE_FORMAT_VERSION",
    "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION",
    "MANIFEST_FILE",
    "PART_NAMES",
    "EngineRecord",
    "ExportGeometry",
    "ExportManifest",
    "GraphPartRecord",
    "Normalization",
    "Precision",
    "Runtime",
    "TensorRecord",
    "folder_kind",
    "verify_folder",
]
