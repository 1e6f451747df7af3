"""The project's own exception types.

Domain code raises these; only the CLI turns them into a one-paragraph message on stderr and a
non-zero exit code. Each message names the culprit (file, key, value) and what was expected.
"""

from __future__ import annotations


class MlptrainError(Exception):
    """Base of every error the tool reports to a user without a traceback."""


class ConfigError(MlptrainError):
    """A config file, a --set override or a config value is wrong."""


class DataError(MlptrainError):
    """A dataset file is missing, truncated, corrupt, or cannot be downloaded."""


class ModelError(MlptrainError):
    """Weights do not fit the model (names, shapes), or a model cannot be built."""


class BackendError(MlptrainError):
    """A device or array backend cannot be used."""


class RunStoreError(MlptrainError):
    """A run directory cannot be found, read or written."""


class TrainingError(MlptrainError):
    """Training cannot go on (for example the loss became NaN)."""


class ExportError(MlptrainError):
    """An export cannot be made (a missing optional library) or failed its verification."""
