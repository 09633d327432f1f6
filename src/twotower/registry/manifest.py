"""A model version's manifest: the sha256 and size of every file it is made of. Written when the version is
registered; checked whenever it is loaded, so a file changed, missing or added since is refused by name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import atomic_path
from ..errors import InputError

MANIFEST = "manifest.json"
# serving state, not the version: rebuilt from the version's own files, or written by `Model.ingest`
MUTABLE = ("features/online.sqlite", "features/online.json", "features/ingested.sqlite", "pgdata/",
           "evaluation.json")         # the last `twotower report --test` table, recorded with the version


def is_mutable(relative: str) -> bool:
    """True for files the serving process owns (the online store, the ingested-event log and their journals)."""
    return relative == MANIFEST or any(relative.startswith(m) for m in MUTABLE)


def version_files(folder: Path) -> list[str]:
    """The version's files under `folder`, as sorted relative POSIX paths (serving state left out)."""
    files = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(f for f in files if not is_mutable(f) and not Path(f).name.startswith("."))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> dict:
    """Record every file of the version in `folder`/manifest.json; returns the manifest."""
    manifest = {"files": {f: {"sha256": sha256(folder / f), "bytes": (folder / f).stat().st_size}
                          for f in version_files(folder)}}
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify(folder: Path, what: str) -> dict:
    """Check `folder` against its manifest: the first file changed, missing or added is one error naming it
    (`what` names the version). Returns the manifest."""
    fix = "register the model again from its training folder (a registered version is never edited)"
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError(str(folder), f"{what} has no {MANIFEST}", fix)
    try:
        expected = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(str(path), f"the manifest of {what} is damaged ({exc})", fix) from exc
    present = version_files(folder)
    for name in sorted(expected):
        if name not in present:
            raise InputError(str(folder / name), f"is missing from {what}", fix)
        if (folder / name).stat().st_size != expected[name]["bytes"] or sha256(folder / name) != expected[name]["sha256"]:
            raise InputError(str(folder / name), f"changed after {what} was registered (sha256 differs)", fix)
    added = sorted(set(present) - set(expected))
    if added:
        raise InputError(str(folder / added[0]), f"was added to {what} after it was registered", fix)
    return expected
