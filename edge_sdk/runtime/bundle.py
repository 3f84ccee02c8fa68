"""Reading and writing `*.bundle` files: a zip (or a directory) holding `bundle.yaml`
and the ONNX graphs it names.

Nothing is extracted to disk: members are read into memory with size caps, and every
graph's sha256 is checked on the exact bytes that are handed to ONNX Runtime.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.bundle"
>>> _ = write_bundle(path, example_manifest(), {"model.onnx": b"not a real graph"})
>>> Bundle.open(path).manifest.name
'example'
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge_sdk.errors import BundleError, BundleIntegrityError
from edge_sdk.runtime.manifest import FORMAT, Manifest, check_format

log = logging.getLogger(__name__)

MANIFEST_NAME = "bundle.yaml"
MAX_MEMBER_BYTES = 1 << 30  # one graph; EfficientAD-M in float32 is about 90 MB
MAX_TOTAL_BYTES = 4 << 30
MAX_MEMBERS = 256
MAX_MANIFEST_BYTES = 1 << 20
# Graphs are stored uncompressed and weights do not deflate much: a member that claims to
# inflate more than this is a zip bomb, refused before a byte of it is inflated.
MAX_COMPRESSION_RATIO = 100
_READ_CHUNK = 1 << 20


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read in 1 MiB pieces (weights files can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_manifest(text: str | bytes, *, source: str) -> Manifest:
    """Parse and validate manifest YAML; errors name `source` and each bad field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BundleError(f"{source}: {MANIFEST_NAME} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(
            f"{source}: {MANIFEST_NAME} must be a mapping of fields, got {type(data).__name__}"
        )
    # Check the version first: a newer bundle should say "upgrade", not list field errors.
    fmt = data.get("format")
    if not isinstance(fmt, str):
        raise BundleError(f"{source}: {MANIFEST_NAME} has no 'format' field (expected {FORMAT})")
    try:
        check_format(fmt)
    except ValueError as exc:
        raise BundleError(f"{source}: field 'format': {exc}") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(
            f"{source}: {MANIFEST_NAME} is invalid:\n{_format_validation(exc)}"
        ) from None


def dump_manifest(manifest: Manifest) -> str:
    return yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False)


class _Members:
    """Read-only access to the files of a zip or directory bundle, with safety caps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._total = 0
        if path.is_dir():
            return
        if not path.exists():
            raise BundleError(f"{path}: no such bundle file or directory")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise BundleError(f"{path}: not a bundle (expected a zip archive): {exc}") from exc
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BundleError(f"{path}: {len(infos)} members, more than the {MAX_MEMBERS} allowed")
        for info in infos:
            name = info.filename
            if name.startswith("/") or "\\" in name or ".." in name.split("/"):
                raise BundleError(f"{path}: member {name!r} has an unsafe path")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BundleError(f"{path}: member {name!r} is a symbolic link")
            if info.file_size > MAX_MEMBER_BYTES:
                raise BundleError(
                    f"{path}: member {name!r} is larger than {MAX_MEMBER_BYTES} bytes "
                    f"(it declares {info.file_size})"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _READ_CHUNK and ratio > MAX_COMPRESSION_RATIO:
                raise BundleError(
                    f"{path}: member {name!r} inflates {ratio:.0f}-fold ({info.compress_size} "
                    f"to {info.file_size} bytes), more than the {MAX_COMPRESSION_RATIO} a "
                    "bundle can have: refused as a zip bomb"
                )
        declared = sum(i.file_size for i in infos)
        if declared > MAX_TOTAL_BYTES:
            raise BundleError(
                f"{path}: members declare {declared} bytes in all, more than {MAX_TOTAL_BYTES}"
            )

    def names(self) -> list[str]:
        if self._zip is not None:
            return [i.filename for i in self._zip.infolist() if not i.is_dir()]
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if not p.is_dir())

    def read(self, name: str, *, limit: int | None = None) -> bytes:
        limit = MAX_MEMBER_BYTES if limit is None else limit
        if self._zip is not None:
            data = self._read_zip(name, limit)
        else:
            data = self._read_dir(name, limit)
        self._total += len(data)
        if self._total > MAX_TOTAL_BYTES:
            raise BundleError(f"{self.path}: members exceed {MAX_TOTAL_BYTES} bytes in all")
        return data

    def _read_zip(self, name: str, limit: int) -> bytes:
        assert self._zip is not None
        try:
            handle = self._zip.open(name)
        except KeyError:
            raise BundleError(f"{self.path}: missing member {name!r}") from None
        if self._zip.getinfo(name).file_size > limit:  # declared: checked before inflating
            handle.close()
            raise BundleError(f"{self.path}: member {name!r} is larger than {limit} bytes")
        # Streamed in chunks, never past the cap (zipfile stops at the declared size and
        # checks the CRC, so a header that lies about the size is caught as corrupt).
        data = bytearray()
        try:
            with handle:
                while chunk := handle.read(_READ_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise BundleError(
                            f"{self.path}: member {name!r} is larger than {limit} bytes"
                        )
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BundleError(f"{self.path}: member {name!r} is corrupt: {exc}") from exc
        return bytes(data)

    def _read_dir(self, name: str, limit: int) -> bytes:
        member = self.path / name
        # A symlink could point anywhere on the box; a bundle directory holds plain files.
        for parent in [member, *member.parents]:
            if parent == self.path:
                break
            if parent.is_symlink():
                raise BundleError(f"{self.path}: member {name!r} is a symbolic link")
        if not member.is_file():
            raise BundleError(f"{self.path}: missing member {name!r}")
        size = member.stat().st_size
        if size > limit:
            raise BundleError(f"{self.path}: member {name!r} is larger than {limit} bytes")
        return member.read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


@dataclass(frozen=True)
class Bundle:
    """An opened bundle: its validated manifest and where it came from.

    Graph bytes are read on demand with `graph()`, verified against the manifest.
    """

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Bundle:
        """Read and validate the manifest of a bundle file or directory."""
        bundle_path = Path(path).expanduser().absolute()
        members = _Members(bundle_path)
        try:
            text = members.read(MANIFEST_NAME, limit=MAX_MANIFEST_BYTES)
        finally:
            members.close()
        return cls(bundle_path, parse_manifest(text, source=str(bundle_path)))

    def variants(self) -> list[str]:
        return list(self.manifest.graph_files())

    def graph(self, variant: str = "fp32") -> bytes:
        """The verified bytes of one graph ('fp32' is the float32 graph)."""
        graphs = self.manifest.graph_files()
        if variant not in graphs:
            raise BundleError(
                f"{self.path}: no graph variant {variant!r}; the bundle has {sorted(graphs)}"
            )
        ref = graphs[variant]
        members = _Members(self.path)
        try:
            data = members.read(ref.file)
        finally:
            members.close()
        digest = sha256_hex(data)
        if digest != ref.sha256:
            raise BundleIntegrityError(
                f"{self.path}: member {ref.file!r} has sha256 {digest}, the manifest "
                f"(model{'' if variant == 'fp32' else '.variants.' + variant}.sha256) "
                f"expects {ref.sha256}: the bundle is corrupt or was altered"
            )
        return data

    def read_member(self, name: str) -> bytes:
        """Any other member (model card, calibration statistics), unverified."""
        members = _Members(self.path)
        try:
            return members.read(name)
        finally:
            members.close()

    def member_names(self) -> list[str]:
        members = _Members(self.path)
        try:
            return members.names()
        finally:
            members.close()


def write_bundle(
    path: str | os.PathLike[str],
    manifest: Manifest,
    files: Mapping[str, bytes],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a zip bundle atomically. The sha256 of every graph the manifest names is
    filled in from `files`; bundles are immutable, so an existing file is refused unless
    `overwrite` is set.
    """
    out = Path(path).expanduser().absolute()
    if out.exists() and not overwrite:
        raise BundleError(f"{out}: already exists; bundles are immutable, choose a new name")
    model = manifest.model
    for ref_file in [model.file, *(v.file for v in model.variants.values())]:
        if ref_file not in files:
            raise BundleError(f"{out}: the manifest names {ref_file!r} but no such file given")
    variants = {
        key: var.model_copy(update={"sha256": sha256_hex(files[var.file])})
        for key, var in model.variants.items()
    }
    model = model.model_copy(update={"sha256": sha256_hex(files[model.file]), "variants": variants})
    manifest = manifest.model_copy(update={"model": model})
    # Re-validate: model_copy does not, and a bundle must never be written invalid.
    manifest = Manifest.model_validate(manifest.model_dump())

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            archive.writestr(MANIFEST_NAME, dump_manifest(manifest), zipfile.ZIP_DEFLATED)
            for name, data in files.items():
                # Graphs are stored uncompressed: float weights barely compress and
                # loading is faster.
                archive.writestr(name, data, zipfile.ZIP_STORED)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.info("wrote bundle %s (%s)", out, manifest.name)
    return out


def example_manifest(**overrides: Any) -> Manifest:
    """A valid manifest with placeholder figures, for documentation and tests."""
    data: dict[str, Any] = {
        "name": "example",
        "model": {"architecture": "efficientad-s", "sha256": "0" * 64},
        "normalization": {"st": {"qa": 0.1, "qb": 0.3}, "ae": {"qa": 0.05, "qb": 0.2}},
        "threshold": {"image": 0.1, "pixel": 0.1},
    }
    data.update(overrides)
    return Manifest.model_validate(data)


def describe(bundle: Bundle) -> dict[str, Any]:
    """A JSON-ready summary for `edge-ad bundle info`."""
    m = bundle.manifest
    return {
        "path": str(bundle.path),
        "name": m.name,
        "format": m.format,
        "created": m.created.isoformat(),
        "created_by": m.created_by,
        "description": m.description,
        "parent": m.parent,
        "architecture": m.model.architecture,
        "input": m.model.input.model_dump(),
        "graphs": {k: v.model_dump() for k, v in m.graph_files().items()},
        "normalization": m.normalization.model_dump(),
        "threshold": m.threshold.model_dump(),
        "calibration": m.calibration,
        "training": m.training,
    }


__all__ = [
    "MANIFEST_NAME",
    "Bundle",
    "describe",
    "dump_manifest",
    "example_manifest",
    "parse_manifest",
    "sha256_hex",
    "write_bundle",
]
