"""Exceptions that carry a message meant for the user.

Every error that a user can cause (a bad image, a malformed annotation file, a
tampered model file, an empty phrase) is raised as a subclass of
:class:`RegionCapError` with a one-line message naming what is wrong. The CLI
turns them into exit code 2 and the app into a Gradio error, so no traceback
ever reaches a user. Scripts (``train/``, ``regioncap.calibrate``) refuse bad input with :func:`fail`.
"""

import sys
from typing import NoReturn

EXIT_USAGE = 2


def fail(message: object) -> NoReturn:
    """Print ``error: MESSAGE`` (its first line) on stderr and exit with code 2: a script's one way to refuse input."""
    lines = str(message).strip().splitlines()
    print(f"error: {lines[0] if lines else type(message).__name__}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


class RegionCapError(Exception):
    """Base class of all errors caused by user input."""


class ImageError(RegionCapError, ValueError):
    """An image that cannot be read: corrupt, empty, too large, not an image."""


class AnnotationError(RegionCapError, ValueError):
    """A Flickr30k-Entities-style annotation or sentence file that is malformed."""


class ModelFileError(RegionCapError, ValueError):
    """A model folder or file that is missing, tampered with, or not safe to load."""


class TextError(RegionCapError, ValueError):
    """A phrase or sentence that cannot be used (empty, no known words)."""


class SearchIndexError(RegionCapError, ValueError):
    """A collection index that is missing, locked by another process, unreachable, or built by another model."""
