"""Model files named in a study's ``selected`` table: stored relative to the study folder (a URI such as
``s3://…`` stays absolute) and resolved against the folder being read, so that a copied or moved study
uses its own ``models/`` and never another folder's."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from foundations import storage

MODELS = "models"  # the study's folder of exported models (study/search.py)


class ModelPathError(ValueError):
    """A model file of the ``selected`` table is not in the study folder being read."""


def to_stored(location, path: str) -> str:
    """``path`` as the ``selected`` table stores it: relative to the study folder, or a URI as is."""
    if not path or storage.is_remote(path) or storage.is_remote(location):
        return path
    try:
        return Path(path).resolve().relative_to(Path(storage.normalize(location)).resolve()).as_posix()
    except ValueError:
        return path  # outside the study folder (not written by the search): kept as it is


def resolve(location, stored: str) -> str:
    """The file ``stored`` names, in the study at ``location``.

    A relative path is joined to ``location``; a URI is used as is. An absolute local path (studies
    written before paths were relative) is used if it lies in ``location``; one in another study folder
    is looked up by its part from ``models/`` on in this folder. Raises :class:`ModelPathError` if the
    file is not in this folder (another folder's model is never read).
    """
    if not stored or storage.is_remote(stored):
        return stored
    root = storage.normalize(location)
    p = PurePosixPath(stored)
    if not p.is_absolute():
        found = storage.join(root, *p.parts)
        if not storage.exists(found):
            raise ModelPathError(f"selected: model file {p} is missing from the study folder {root}; "
                                 f"run the search again (--stage search) to export it, or restore {found}")
        return found
    if not storage.is_remote(root) and Path(stored).resolve().is_relative_to(Path(root).resolve()):
        return stored
    parts = p.parts
    if MODELS in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index(MODELS, 1)  # the last models/ above the file
        found = storage.join(root, *parts[i:])
        if storage.exists(found):
            return found
    raise ModelPathError(f"selected: model file {stored} is not in the study folder {root} (a copied or moved "
                         f"study?); valid choices: restore its models/ folder in {root}, or run the search again")


def resolve_row(location, row: dict) -> dict:
    """A ``selected`` row with its ``weights_path`` and ``config_path`` resolved (see :func:`resolve`)."""
    return {**row, **{k: resolve(location, row[k]) for k in ("weights_path", "config_path") if k in row}}
