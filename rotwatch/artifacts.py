"""Model artifacts: ``model.joblib`` files under a model root, checked by sha256.

Artifacts go through Beam's :class:`~apache_beam.io.filesystems.FileSystems`, so the
model root is a local folder by default (``.rotwatch/models``) and ``gs://bucket/prefix``
in the cloud, with the same code. Layout::

    <model root>/<model>/<version>/model.joblib

Loading a joblib (pickle) file executes code, so a file is only unpickled after its
sha256 matches the one the registry recorded when it was written. A mismatch raises
:class:`ArtifactIntegrityError` and nothing is loaded: the caller keeps what it had.

>>> uri = artifact_uri("/tmp/models", "zombies", "v1")
>>> sha = save_estimator(uri, {"any": "picklable object"})
>>> load_estimator(uri, sha)
{'any': 'picklable object'}
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import uuid

__all__ = ["ARTIFACT_NAME", "ArtifactError", "ArtifactNotFound", "ArtifactIntegrityError",
           "artifact_uri", "serialize", "sha256_hex", "write_artifact", "read_artifact",
           "save_estimator", "load_estimator", "warm_up"]

_LOGGER = logging.getLogger(__name__)

ARTIFACT_NAME = "model.joblib"
# joblib compression level 3: a forest shrinks several-fold for a few ms more per MB.
COMPRESS = 3
# Read in 1 MiB chunks: GCS reads are ranged requests, local reads do not care.
_CHUNK = 1 << 20
_IMPORT_LOCK = threading.Lock()


class ArtifactError(RuntimeError):
    """An artifact could not be written or read."""


class ArtifactNotFound(ArtifactError, FileNotFoundError):
    """No file at the artifact's URI."""


class ArtifactIntegrityError(ArtifactError):
    """The file's sha256 differs from the registry's: it was altered; never loaded."""

    def __init__(self, uri: str, expected: str, actual: str):
        self.uri, self.expected, self.actual = uri, expected, actual
        super().__init__(
            f"artifact {uri} has sha256 {actual}, but the registry recorded {expected}: "
            "the file was altered or replaced, so it is not loaded. Restore the "
            "original file, or train and register a new version "
            "(rotwatch model train ...)")


def _filesystems():
    # Imported on first use: Beam's import costs seconds and is not needed to import
    # us. Under a lock: Beam's circular imports deadlock or half-initialise when two
    # threads (say, a gateway's first requests) import it at the same moment.
    with _IMPORT_LOCK:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems
    return FileSystems, CompressionTypes


def warm_up() -> None:
    """Import Beam's file systems now (seconds), not during the first load."""
    _filesystems()


def _absolute(root: str) -> str:
    """A local root made absolute (the registry must not depend on the cwd)."""
    if "://" in root:
        return root.rstrip("/")
    return os.path.abspath(root)


def artifact_uri(model_root: str, model: str, version: str) -> str:
    """``<root>/<model>/<version>/model.joblib``, absolute for local roots."""
    if not model_root:
        raise ValueError("model_root is empty: set --model-root or ROTWATCH_MODEL_ROOT")
    FileSystems, _ = _filesystems()
    return FileSystems.join(_absolute(model_root), model, version, ARTIFACT_NAME)


def serialize(estimator) -> bytes:
    import joblib
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer, compress=COMPRESS)
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_artifact(uri: str, data: bytes) -> str:
    """Write ``data`` to ``uri`` (via a temporary name, then rename); its sha256."""
    FileSystems, CompressionTypes = _filesystems()
    partial = f"{uri}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with FileSystems.create(partial, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED) as out:
            out.write(data)
        if FileSystems.exists(uri):
            FileSystems.delete([uri])
        FileSystems.rename([partial], [uri])
    except OSError as exc:  # BeamIOError is an OSError
        raise ArtifactError(f"could not write artifact {uri}: {exc}; check that the "
                            "model root is writable (--model-root)") from exc
    digest = sha256_hex(data)
    _LOGGER.info("step=write-artifact uri=%s bytes=%d sha256=%s", uri, len(data), digest)
    return digest


def read_artifact(uri: str, expected_sha256: str) -> bytes:
    """The file's bytes, only if their sha256 is ``expected_sha256``."""
    if not expected_sha256:
        raise ArtifactIntegrityError(uri, "<nothing recorded>", "<not checked>")
    FileSystems, CompressionTypes = _filesystems()
    try:
        with FileSystems.open(uri, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED) as src:
            chunks = []
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        if not FileSystems.exists(uri):
            raise ArtifactNotFound(f"artifact {uri} does not exist; was the model root "
                                   "moved? (--model-root / ROTWATCH_MODEL_ROOT)") from exc
        raise ArtifactError(f"could not read artifact {uri}: {exc}") from exc
    data = b"".join(chunks)
    actual = sha256_hex(data)
    if actual != expected_sha256:
        _LOGGER.error("step=verify-artifact uri=%s outcome=mismatch expected=%s actual=%s",
                      uri, expected_sha256, actual)
        raise ArtifactIntegrityError(uri, expected_sha256, actual)
    return data


def save_estimator(uri: str, estimator) -> str:
    """Serialise and write an estimator; returns the sha256 to record."""
    return write_artifact(uri, serialize(estimator))


def load_estimator(uri: str, expected_sha256: str):
    """Read, verify, then unpickle. Nothing is unpickled unless the sha256 matches."""
    import joblib
    data = read_artifact(uri, expected_sha256)
    return joblib.load(io.BytesIO(data))
