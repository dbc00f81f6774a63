"""Router artifacts: one safe, versioned JSON file holding a trained router.

No pickle: the header is plain JSON (feature settings, models, training-data fingerprint, date,
the lab's metrics at training time) and the weights are numpy arrays stored as zlib-compressed,
base64-encoded little-endian bytes with their dtype and shape. A sha256 over the arrays' bytes
detects corruption; a `format` tag and a `version` refuse foreign or too-new files with a clear
error instead of a confusing failure later.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "gearshift-router"
VERSION = 2  # 2: arrays beyond W and b (the features' idf weights); files of version 1 still load
_DTYPES = {"float32", "float64", "int32", "int64"}


class ArtifactError(ValueError):
    """A router artifact cannot be used; the message says why and what to do."""


@dataclass
class Artifact:
    """A trained router: a JSON header plus named numpy arrays."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def digest(self) -> str:
        return weights_sha256(self.arrays)


def weights_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and little-endian bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = _le(arrays[name])
        h.update(f"{name}|{a.dtype.name}|{','.join(map(str, a.shape))}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable sha256 of training data (prompts, labels, metadata), for the artifact's record."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray) and p.dtype != object:
            a = _le(p)
            h.update(f"{a.dtype.name}|{a.shape}|".encode())
            h.update(a.tobytes())
        else:
            for item in (p if isinstance(p, list | tuple | np.ndarray) else [p]):
                h.update(str(item).encode("utf-8", "surrogatepass"))
                h.update(b"\x00")
        h.update(b"\x01")
    return "sha256:" + h.hexdigest()


def _le(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.astype(a.dtype.newbyteorder("<"), copy=False) if a.dtype.byteorder == ">" else a


def _encode(a: np.ndarray) -> dict[str, Any]:
    a = _le(a)
    if a.dtype.name not in _DTYPES:
        raise ArtifactError(f"cannot store array of dtype {a.dtype.name}; allowed: {sorted(_DTYPES)}")
    return {"dtype": a.dtype.name, "shape": list(a.shape), "encoding": "zlib+base64",
            "data": base64.b64encode(zlib.compress(a.tobytes(), 6)).decode("ascii")}


def _decode(name: str, spec: Any, where: str) -> np.ndarray:
    if not isinstance(spec, dict) or not {"dtype", "shape", "data"} <= spec.keys():
        raise ArtifactError(f"{where}: array {name!r} is malformed (needs dtype, shape, data); the file is corrupt")
    dtype, shape = spec["dtype"], spec["shape"]
    if dtype not in _DTYPES or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ArtifactError(f"{where}: array {name!r} has a bad dtype {dtype!r} or shape {shape!r}; the file is corrupt")
    if spec.get("encoding", "zlib+base64") != "zlib+base64":
        raise ArtifactError(f"{where}: array {name!r} uses unknown encoding {spec.get('encoding')!r}")
    try:
        raw = zlib.decompress(base64.b64decode(spec["data"], validate=True))
    except (ValueError, zlib.error) as e:
        raise ArtifactError(f"{where}: array {name!r} cannot be decoded ({e}); the file is corrupt") from None
    dt = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(raw) != expected:
        raise ArtifactError(f"{where}: array {name!r} holds {len(raw)} bytes, its shape needs {expected}; "
                            "the file is corrupt or truncated")
    return np.frombuffer(raw, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))


def save(artifact: Artifact, path: str | Path) -> Path:
    """Write the artifact as one JSON file (atomically: a reader never sees half a file)."""
    p = Path(path)
    doc = {"format": FORMAT, "version": VERSION, **artifact.header,
           "weights_sha256": artifact.digest(),
           "arrays": {name: _encode(a) for name, a in sorted(artifact.arrays.items())}}
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False, allow_nan=False))
    tmp.replace(p)
    return p


def load(path: str | Path, kind: str | None = None) -> Artifact:
    """Read and verify an artifact; raise ArtifactError saying why a file is refused."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"router artifact {p} does not exist; train one with `gearshift lab train`") from None
    except OSError as e:
        raise ArtifactError(f"cannot read router artifact {p}: {e.strerror}") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{p} is not a gearshift router artifact (not JSON); "
                            "artifacts are written by `gearshift lab train`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ArtifactError(f"{p} is not a gearshift router artifact (format {found!r}, expected {FORMAT!r}); "
                            "artifacts are written by `gearshift lab train`")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{p}: bad artifact version {version!r}; the file is corrupt")
    if version > VERSION:
        raise ArtifactError(f"{p}: artifact version {version} is newer than this gearshift reads ({VERSION}); "
                            "upgrade gearshift or retrain with this version")
    if kind is not None and doc.get("kind") != kind:
        raise ArtifactError(f"{p}: artifact is for router kind {doc.get('kind')!r}, not {kind!r}")
    specs = doc.pop("arrays", None)
    if not isinstance(specs, dict):
        raise ArtifactError(f"{p}: no `arrays` in the artifact; the file is corrupt")
    arrays = {name: _decode(name, spec, str(p)) for name, spec in specs.items()}
    stated = doc.pop("weights_sha256", None)
    actual = weights_sha256(arrays)
    if stated != actual:
        raise ArtifactError(f"{p}: weights checksum mismatch (file says {str(stated)[:12]}..., content is "
                            f"{actual[:12]}...); the file is corrupt or was edited; retrain or restore it")
    doc.pop("format", None)
    doc.pop("version", None)
    return Artifact(header=doc, arrays=arrays)
