"""Annotated copies of captioned pictures (``caption --output`` and ``--output-dir``).

* **Display size.** The boxes are drawn on a copy whose longest side is at most :data:`DISPLAY_SIZE`
  pixels (the picture already decoded for the model, reduced; never decoded again), saved as JPEG.
* **Names that cannot collide.** ``--output-dir DIR`` writes ``DIR/<path under the inputs' folder>`` plus
  :data:`OUTPUT_SUFFIX`: ``holiday/a.jpg`` -> ``DIR/holiday/a.jpg.regions.jpg``, so ``a.jpg``, ``a.png``
  and ``a.webp`` give three files. The inputs' folder is the one the folder arguments (and named files)
  share, as given: a link to a file elsewhere does not move it.
* **Never over an input, never over a stranger.** An output folder equal to a folder the inputs were named
  in or walked from is refused, and the walk skips the output folder (and any folder holding
  :data:`~regioncap.index.files.OUTPUT_MARKER`, which a folder this module created gets). A target that is
  an input is refused, and an existing file is replaced only when it carries :data:`TAG` (a file this
  module wrote). Writes are atomic: a full disk leaves no half picture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image, PngImagePlugin

from regioncap.batch import shrink
from regioncap.errors import RegionCapError
from regioncap.fileio import atomic_path, write_text_atomic
from regioncap.index.files import OUTPUT_MARKER, Walk, input_roots

DISPLAY_SIZE = 1600  # longest side of an annotated copy, in pixels
OUTPUT_SUFFIX = ".regions.jpg"
TAG = "regioncap annotated picture"  # JPEG comment / PNG "Software" text of every picture written here
_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def draw(preview: Image.Image, result) -> Image.Image:
    """``result``'s regions drawn on ``preview`` (the analysed picture, possibly reduced: boxes scaled)."""
    from regioncap.viz import draw_regions

    sx, sy = preview.width / result.width, preview.height / result.height
    regions = [{"box": [r.box[0] * sx, r.box[1] * sy, r.box[2] * sx, r.box[3] * sy], "caption": r.caption}
               for r in result.regions]
    return draw_regions(preview, regions)


def is_ours(path: Path) -> bool:
    """True when ``path`` is a picture this module wrote (it carries :data:`TAG`)."""
    try:
        with Image.open(path, formats=["JPEG", "PNG"]) as im:  # what save() writes; no other decoder
            info = im.info
    except Exception:  # not a picture, unreadable: not ours
        return False
    return info.get("comment") == TAG.encode() or info.get("Software") == TAG


def check_target(target: Path, inputs: set[Path], ours=None) -> None:
    """RegionCapError when writing ``target`` would replace an input (``inputs``: resolved paths) or a file
    regioncap did not write (``ours(path)``: whether a file is one of ours; default :func:`is_ours`)."""
    real = target.resolve()
    if real in inputs:
        raise RegionCapError(f"{target}: is an input; an output never replaces an input (choose another name)")
    if os.path.lexists(target) and not (target.is_file() and (ours or is_ours)(target)):
        raise RegionCapError(f"{target}: exists and was not written by regioncap; it is not replaced "
                             "(move it away or choose another name)")


def save(picture: Image.Image, target: Path) -> None:
    """Write ``picture`` to ``target`` atomically with :data:`TAG`: JPEG for a JPEG suffix, else PNG.
    RegionCapError naming ``target`` when it cannot be written (a full disk, no permission)."""
    try:
        with atomic_path(target) as tmp:
            if target.suffix.lower() in _JPEG_SUFFIXES:
                picture.save(tmp, format="JPEG", quality=90, subsampling=0, comment=TAG)
            else:
                info = PngImagePlugin.PngInfo()
                info.add_text("Software", TAG)
                picture.save(tmp, format="PNG", pnginfo=info)
    except OSError as e:
        raise RegionCapError(f"{target}: cannot write the annotated copy ({e.strerror or e})") from None


def write_one(image: Image.Image, result, target: Path, source: Path) -> None:
    """``caption IMAGE --output FILE``: the annotated copy at display size, after the checks above."""
    check_target(target, {Path(source).resolve()})
    save(draw(shrink(image, DISPLAY_SIZE), result), target)


def _same_folder(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one folder: the same real path, or (existing) the same file on disk, which
    also catches the names that realpath keeps apart (``Photos`` and ``photos`` on a case-insensitive disk,
    a bind mount)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same
        return False


class OutputFolder:
    """``--output-dir``: where each found file's annotated copy goes, and writing it.

    ``inputs``: the command's file and folder arguments. Raises RegionCapError (before anything is walked
    or written) when ``folder`` is a folder the inputs are named in or walked from. :meth:`add` then tells
    it what the walk found."""

    def __init__(self, folder: Path, inputs):
        self.folder = Path(os.path.abspath(Path(folder).expanduser()))
        roots = input_roots(inputs)
        for root in roots:
            if _same_folder(root, self.folder):
                raise RegionCapError(f"--output-dir {folder}: is an input folder; the annotated copies would be "
                                     "mixed with the pictures: choose another folder (one inside it is fine)")
        if self.folder.exists() and not self.folder.is_dir():
            raise RegionCapError(f"--output-dir {folder}: is a file, not a folder")
        self.base = Path(os.path.commonpath([str(r) for r in roots])) if roots else self.folder
        self.names: dict[Path, Path] = {}
        self.inputs: set[Path] = set()
        self._ready = False

    def add(self, found: Walk) -> None:
        """The files found: each one's name as found places its copy; none is ever written over."""
        self.names.update((f.path, f.name) for f in found.found)
        self.inputs.update(self.names)

    @staticmethod
    def preview(image: Image.Image) -> Image.Image:
        """``image`` at display size (what :meth:`write` draws on)."""
        return shrink(image, DISPLAY_SIZE)

    def target(self, path: Path) -> Path:
        """The annotated copy's path for the found file ``path`` (resolved, as in ``Walk.files``)."""
        name = self.names.get(path, path)
        rel = name.relative_to(self.base) if name.is_relative_to(self.base) else Path(name.name)
        return self.folder / rel.parent / (rel.name + OUTPUT_SUFFIX)

    def write(self, path: Path, preview: Image.Image, result) -> Path:
        """Draw ``result`` on ``preview`` and write it to :meth:`target`; RegionCapError or OSError when it
        cannot be (an input or a stranger's file in the way, a full disk), nothing left behind."""
        target = self.target(path)
        check_target(target, self.inputs)
        self._prepare()
        target.parent.mkdir(parents=True, exist_ok=True)
        save(draw(preview, result), target)
        return target

    def prepare(self) -> None:
        """Create the folder now (a video's copy is written into it frame by frame, not by :meth:`write`)."""
        self._prepare()

    def _prepare(self) -> None:
        """Create the folder; a folder created here (or found empty) gets the marker the walker skips."""
        if self._ready:
            return
        if not self.folder.exists() or not any(self.folder.iterdir()):
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.folder / OUTPUT_MARKER,
                              json.dumps({"format": "regioncap-output", "written_by": "python -m regioncap caption"})
                              + "\n")
        self._ready = True
