"""Errors a user can act on. Library code raises these with messages phrased for the
API (option names, not flags); the CLI prints them as one line and exits 2."""
from __future__ import annotations


class CompressionError(Exception):
    """Base of every error whose message tells the user what to fix."""


class RecipeError(CompressionError, ValueError):
    """A recipe (or a value in it) is wrong."""


class DataError(CompressionError, ValueError):
    """The dataset is missing or malformed."""


class ModelError(CompressionError, ValueError):
    """The model path/id cannot be used."""


class BuildError(CompressionError, RuntimeError):
    """A precondition of the build failed (output folder, build folder contents)."""


class OnnxError(CompressionError, ValueError):
    """An ONNX file is missing, unreadable or not a model."""


class ArtifactError(CompressionError, RuntimeError):
    """A variant folder is missing a file, or one is truncated or corrupt; the message names the folder."""


class PublishError(CompressionError, RuntimeError):
    """Publishing failed; the message says what was and wasn't published."""


class AuthError(PublishError):
    """The token cannot write where publishing was asked to."""


class StepNotApplicable(CompressionError, RuntimeError):
    """A step cannot run here (this model's architecture, this machine); the variant is
    skipped with this reason while the others are built."""


USER_ERRORS = (CompressionError,)
