"""The app's model: loaded once in the background (the page answers while torch is imported), and the
Model tab's text about it."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from regioncap.card import card_sections, read_card
from regioncap.errors import RegionCapError

from appui.settings import DEMO_MODEL

logger = logging.getLogger("regioncap.app")
SHAPES_NOTE = ("This demo model was trained only on synthetic scenes of coloured, patterned shapes (circles, "
               "squares, triangles, stars, hexagons, crosses) on plain backgrounds: on a real photo it will "
               "still talk about shapes. Its entity types are stand-ins ({mapping}).")


class ModelHolder:
    """Loads the model once, in a background thread, so that the page answers while torch is imported."""

    def __init__(self, path: str | None = None):
        self.path, self.model, self.error, self.directory = path, None, None, None
        self.ready = threading.Event()

    def start(self) -> ModelHolder:
        threading.Thread(target=self.load, name="regioncap-model", daemon=True).start()
        return self

    def load(self) -> None:
        try:
            from regioncap import hub
            from regioncap.models.model import RegionCaptioner

            self.path = self.path or hub.default_model_path()
            if self.path == hub.DEFAULT_MODEL and not Path(self.path).is_dir():  # not a Hub id to look up
                raise RegionCapError(f"{self.path}/: the bundled demo model is missing from this checkout")
            revision = os.environ.get("REGIONCAP_MODEL_REVISION") or None  # pin a Hub revision
            self.directory = hub.resolve_model_dir(self.path, revision)
            model = RegionCaptioner.from_pretrained(self.path, revision=revision)
            model.prepare_inference()  # the CPU fast path's export, before the first request rather than in it
            self.model = model
        except RegionCapError as e:
            self.error = str(e)
        except Exception as e:  # a broken install must still leave a page that says what happened
            logger.exception("loading %s failed", self.path)
            self.error = f"{self.path}: could not be loaded ({type(e).__name__}: {e})"
        finally:
            self.ready.set()
        logger.log(logging.ERROR if self.error else logging.INFO, "model %s: %s", self.path, self.error or "loaded")

    def get(self):
        if not self.ready.wait(120):
            raise RegionCapError("The model is still loading; try again in a few seconds.")
        if self.model is None:
            raise RegionCapError(f"No model is loaded, so nothing can be analysed. {self.error}")
        return self.model



def describe_model(holder: ModelHolder) -> tuple[str, str]:
    """(Markdown for the Model tab, the shapes-world note or "") from the config and the model card."""
    c = holder.model.config
    sections = card_sections(read_card(holder.directory) if holder.directory else "")
    note = ""  # the training data, not the card's limitations (which mention the synthetic set), decides
    if Path(holder.path).resolve() == DEMO_MODEL.resolve() or "synthetic" in sections.get("Training data", "").lower():
        from regioncap.data.synthetic import SHAPE_TYPES

        note = SHAPES_NOTE.format(mapping=", ".join(f"{s} = {t}" for s, t in SHAPE_TYPES.items()))
    lines = [f"> **{note}**\n" if note else "", f"**Loaded model:** `{holder.path}`", "",
             f"- detector: Faster R-CNN `{c.detector.arch}`; entity types: {', '.join(c.entity_types)}",
             f"- region encoder `{c.region_encoder.kind}` into a {c.joint_dim}-d joint space; text encoder GRU "
             f"{c.text_encoder.hidden_dim}; caption decoder {c.captioner.rnn.upper()} {c.captioner.hidden_dim}",
             f"- vocabulary: {c.vocab_size} words", "", "### Training data",
             sections.get("Training data", "Not recorded in the model card."), "", "### Metrics",
             sections.get("Metrics", "Not recorded in the model card.")]
    return "\n".join(lines), note
