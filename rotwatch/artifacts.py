"""Model artifacts: ``model.joblib`` files under a model root, checked by sha256.

Artifacts go through Beam's :class:`~apache_beam.io.filesystems.FileSystems`, so the
model root is a local folder by default (``.rotwatch/models``) and ``gs://bucket/prefix``
in the cloud, with the same code. Layout::

    <model root>/<model>/<version>/<sha256>/model.joblib

The path names the file's own sha256 (content addressing): two attempts that write
an artifact for the same version (a trainer that stalled past its lease and the one
that took its job over) never write different bytes to one path, and a path, once
written, always holds the same bytes. The registry records which of them is the
version's (:meth:`rotwatch.registry.Registry.register_version_once`); the other is
deleted by its writer, or, if that writer died, left unreferenced.

Loading a joblib (pickle) file executes code, so a file is only unpickled after its
sha256 matches the one the registry recorded when it was written. A mismatch raises
:class:`ArtifactIntegrityError` and nothing is loaded: the caller keeps what it had.

>>> data = serialize({"any": "picklable object"})
>>> uri = artifact_uri("/tmp/models", "zombies", "v1", sha256_hex(data))
>>> sha = write_artifact(uri, data)
>>> load_estimator(uri, sha)
{'any': 'picklable object'}
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
import uuid

__all__ = ["ARTIFACT_NAME", "ArtifactError", "ArtifactNotFound", "ArtifactIntegrityError",
           "artifact_uri", "serialize", "sha256_hex", "write_artifact", "read_artifact",
           "delete_artifact", "save_estimator", "load_estimator", "warm_up"]

_LOGGER = logging.getLogger(__name__)

ARTIFACT_NAME = "model.joblib"
# joblib compression level 3: a forest shrinks several-fold for a few ms more per MB.
COMPRESS = 3
# Read in 1 MiB chunks: GCS reads are ranged requests, local reads do not care.
_CHUNK = 1 << 20
_IMPORT_LOCK = threading.Lock()
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def artifact_uri(model_root: str, model: str, version: str, sha256: str) -> str:
    """``<root>/<model>/<version>/<sha256>/model.joblib``, absolute for local roots.

    ``sha256`` is the hex digest of the bytes to be written there
    (:func:`sha256_hex`), so different bytes never share a path.
    """
    if not model_root:
        raise ValueError("model_root is empty: set --model-root or ROTWATCH_MODEL_ROOT")
    if not _SHA256.fullmatch(sha256 or ""):
        raise ValueError(f"sha256 must be 64 lowercase hex digits (sha256_hex of the "
                         f"artifact's bytes), got {sha256!r}")
    FileSystems, _ = _filesystems()
    return FileSystems.join(_absolute(model_root), model, version, sha256, ARTIFACT_NAME)


def serialize(estimator) -> bytes:
    import joblib
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer, compress=COMPRESS)
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_artifact(uri: str, data: bytes) -> str:
    """Write ``data`` to ``uri`` (via a temporary name, then rename); its sha256.

    If ``uri`` already holds exactly ``data`` (another attempt wrote the same bytes to
    the same content-addressed path), it is left as it is: a reader never finds it
    missing. A file there with other bytes (altered) is replaced.
    """
    FileSystems, CompressionTypes = _filesystems()
    digest = sha256_hex(data)
    partial = f"{uri}.partial-{uuid.uuid4().hex[:8]}"
    try:
        if FileSystems.exists(uri):
            try:
                read_artifact(uri, digest)
            except (ArtifactIntegrityError, ArtifactNotFound):
                pass  # altered since it was written (or just deleted): written below
            else:
                _LOGGER.info("step=write-artifact uri=%s bytes=%d sha256=%s "
                             "outcome=exists", uri, len(data), digest)
                return digest
        with FileSystems.create(partial, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED) as out:
            out.write(data)
        try:
            # replaces an existing file in one step (POSIX rename, GCS copy)
            FileSystems.rename([partial], [uri])
        except OSError:
            if not FileSystems.exists(uri):
                raise
            FileSystems.delete([uri])   # a file system that will not replace
            FileSystems.rename([partial], [uri])
    except OSError as exc:  # BeamIOError is an OSError
        raise ArtifactError(f"could not write artifact {uri}: {exc}; check that the "
                            "model root is writable (--model-root)") from exc
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


def delete_artifact(uri: str) -> bool:
    """Delete an artifact no version refers to (best effort): whether it is gone.

    A local file's folder (``<version>/<sha256>/``) goes too if that leaves it empty.
    """
    FileSystems, _ = _filesystems()
    try:
        if FileSystems.exists(uri):
            FileSystems.delete([uri])
        if "://" not in uri:
            folder = os.path.dirname(uri)
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
    except OSError as exc:
        _LOGGER.warning("step=delete-artifact uri=%s outcome=failed error=%s (an "
                        "unreferenced file stays behind; nothing loads it)", uri, exc)
        return False
    _LOGGER.info("step=delete-artifact uri=%s outcome=deleted", uri)
    return True


def save_estimator(uri: str, estimator) -> str:
    """Serialise and write an estimator; returns the sha256 to record."""
    return write_artifact(uri, serialize(estimator))


def load_estimator(uri: str, expected_sha256: str):
    """Read, verify, then unpickle. Nothing is unpickled unless the sha256 matches."""
    import joblib
    data = read_artifact(uri, expected_sha256)
    return joblib.load(io.BytesIO(data))
