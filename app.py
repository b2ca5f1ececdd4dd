"""regioncap web app: region captions, phrase search and sentence alignment (Gradio 6).

Thin: it loads one model and formats what ``analyze`` / ``query`` / ``align`` return. ``python app.py``
serves on 127.0.0.1:7860 (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` respected) with
``$REGIONCAP_MODEL`` or ``assets/demo-model``. Endpoints for ``gradio_client`` (without ``image``, the
image last analysed in the same client session is used):

* ``/caption(image, max_regions=10, threshold=0.5) -> (annotated image, regions table, JSON file)``
* ``/query(phrase, top_k=3, image=None, max_regions=10, threshold=0.5) -> (highlighted image, matches table)``
* ``/caption_box(box "x1, y1, x2, y2", image=None, max_regions, threshold) -> like /caption, box added``
* ``/align(sentence, image=None, max_regions, threshold) -> (image, highlighted sentence, S_kl summary)``
* ``/search(text, top_k=6) -> (gallery of the best images, results JSON)``: the session's own collection
  (photos uploaded in the Collection tab) or else the shared one (``$REGIONCAP_INDEX``, or the examples)

Every picture carries a text alternative (the scene narration, or which regions match / went to each
phrase); the Caption tab has a Description block (a polite live region, read aloud on request by the
browser's speech synthesis) and the regions as buttons to explore by keyboard, each outlined on the
picture while it has focus (``appui/narration.py``; docs/accessibility.md).

The Live tab (``appui/live.py``) streams the visitor's camera through the model (a private ``stream`` event,
``live_frame``), numbering regions stably across frames (``regioncap.track``); the Video tab (``appui/video.py``)
captions an uploaded video (``regioncap.video``) and finds the moments a phrase matches.

Pictures are returned as paths of unique files the app wrote, never as PIL images: Gradio 6.31 can
serve a truncated file when two requests return the same PIL image at once (DESIGN.md section 6).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402

from appui.handlers import BOX_INFO, RegionApp  # noqa: E402
from appui.inputs import user_errors  # noqa: E402
from appui.live import LiveApp  # noqa: E402
from appui.video import VideoApp  # noqa: E402
from appui.model import ModelHolder  # noqa: E402
from appui.narration import DESCRIPTION_JS, EXPLORER_JS, PARTS, SPEAK_JS, description_html  # noqa: E402
from appui.settings import (CANDIDATE_HEADERS, DEFAULTS, EXAMPLES_DIR, MATCH_HEADERS, MAX_COLLECTION,  # noqa: E402
                            MAX_FILE_SIZE, MAX_PHRASE, MAX_SENTENCE, PHRASE_COLOURS, TABLE_HEADERS)
from appui.theme import CSS, THEME  # noqa: E402


def example_images(folder: Path = EXAMPLES_DIR) -> list[str]:
    return sorted(str(p) for p in Path(folder).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def build_app(model_path: str | None = None, examples: list[str] | None = None) -> gr.Blocks:
    """The page; the model starts loading in the background at once (``model_path`` None: the default)."""
    examples = example_images() if examples is None else examples
    app = RegionApp(ModelHolder(model_path).start())
    threading.Thread(target=app.warm, args=(examples,), name="regioncap-warm", daemon=True).start()
    live = LiveApp(app)  # the Live tab (appui/live.py): webcam frames streamed through the model
    threading.Thread(target=live.warm, name="regioncap-live-warm", daemon=True).start()
    video = VideoApp(app)  # the Video tab (appui/video.py): an uploaded video captioned, tracked and searchable
    picture = {"type": "filepath", "interactive": False, "buttons": ["download", "fullscreen"]}
    with gr.Blocks(title="regioncap", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# regioncap: region captions and phrase search\nUpload a picture: each interesting region "
                    "gets a numbered box and a caption. Then search the regions with a phrase, or align a sentence.")
        banner = gr.Markdown(visible=False, elem_id="model-banner")
        view = gr.State(None, time_to_live=3600)
        with gr.Row():
            with gr.Column(scale=2, min_width=280):
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=300,
                                 elem_id="input-image")
                max_regions = gr.Slider(1, 30, value=DEFAULTS["max_regions"], step=1, label="Max regions")
                threshold = gr.Slider(0, 1, value=DEFAULTS["threshold"], step=0.05, label="Detector score threshold",
                                      info="Regions scoring below this are dropped.", elem_id="threshold")
                run = gr.Button("Caption regions", variant="primary")
                if examples:
                    gr.Examples(examples, inputs=image, label="Examples (synthetic scenes the demo model knows)")
            with gr.Column(scale=3), gr.Tabs() as tabs:
                with gr.Tab("Caption", id="caption"):
                    annotated = gr.Image(label="Annotated image", elem_id="annotated", **picture)
                    gr.Markdown("### Explore the picture\nEach region is a button, in reading order: Tab (or the "
                                "arrow keys) moves between them and the picture outlines the one in focus.",
                                elem_id="explore-heading")
                    explorer = gr.HTML("", elem_id="region-explorer", js_on_load=EXPLORER_JS)
                    gr.Markdown("### Description", elem_id="description-heading")
                    description = gr.HTML(description_html(None), elem_id="description", js_on_load=DESCRIPTION_JS)
                    speak = gr.Button("Read aloud", size="sm", elem_id="read-aloud")
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="Regions", interactive=False, wrap=True,
                                         datatype=["number", "str", "str", "number", "number", "str"],
                                         column_widths=["6%", "34%", "13%", "12%", "12%", "23%"],
                                         elem_id="regions-table")
                    with gr.Accordion("Candidate captions", open=False):
                        gr.Markdown("Each region's caption is chosen among the decoder's candidates by "
                                    "log-prob / (words + 1)^α + weight × similarity to the region (the model's "
                                    "config sets α and the weight; a model that does not rerank lists none). "
                                    "A box made up of several detected objects (\"two stars\") also adds the "
                                    "group weight × the objects' similarity to the caption read in the singular.")
                        candidates = gr.Dataframe(headers=CANDIDATE_HEADERS, interactive=False, wrap=True,
                                                  datatype=["number", "str", "number", "number", "str", "number",
                                                            "str"],
                                                  elem_id="candidates-table")
                    part = gr.Dropdown(list(PARTS), value=None, label="Part of the picture",
                                       info="Puts that part's box in the field below.", elem_id="box-part")
                    with gr.Row():
                        box = gr.Textbox(label="Caption your own box", placeholder="x1, y1, x2, y2 in image pixels",
                                         info=BOX_INFO, scale=3, max_length=100, elem_id="box")
                        box_button = gr.Button("Caption box", scale=1)
                    box_note = gr.Markdown(elem_id="box-note")
                    download = gr.DownloadButton("Download the result (JSON)", size="sm", elem_id="download")
                with gr.Tab("Search"):
                    with gr.Row():
                        phrase = gr.Textbox(label="Phrase", placeholder="a red circle", scale=3, max_length=MAX_PHRASE,
                                            elem_id="phrase")
                        top_k = gr.Slider(1, 10, value=DEFAULTS["top_k"], step=1, label="Best matches", scale=1)
                    search_note = gr.Markdown()
                    search_image = gr.Image(label="Highlighted matches", elem_id="search-image",
                                            **picture)
                    matches = gr.Dataframe(headers=MATCH_HEADERS, label="Matches, best first", interactive=False,
                                           datatype=["number", "number", "str", "number", "str"], elem_id="matches")
                with gr.Tab("Sentence"):
                    sentence = gr.Textbox(label="Sentence", max_length=MAX_SENTENCE, elem_id="sentence",
                                          placeholder="a large red circle next to a small blue square")
                    aligned = gr.HighlightedText(label="Phrases and their regions", color_map=PHRASE_COLOURS,
                                                 show_legend=False, elem_id="aligned-text")
                    align_image = gr.Image(label="Each phrase's best region", elem_id="align-image", **picture)
                    align_note = gr.Markdown(label="Alignment score", elem_id="align-note")
                with gr.Tab("Collection", id="collection"):
                    gr.Markdown("Search many photos at once: a sentence ranks them by S_kl (each phrase's best "
                                "region, summed). Add up to 50 photos of your own, or search the example collection.")
                    uploads = gr.File(label=f"Add photos to your collection (up to {MAX_COLLECTION})",
                                      file_count="multiple", file_types=["image"], type="filepath", height=120,
                                      elem_id="collection-upload")
                    collection_note = gr.Markdown(elem_id="collection-note")
                    with gr.Row():
                        collection_query = gr.Textbox(label="Sentence or phrase", max_length=MAX_SENTENCE, scale=3,
                                                      placeholder="a red circle next to a blue square",
                                                      elem_id="collection-query")
                        collection_k = gr.Slider(1, 20, value=6, step=1, label="Best images", scale=1)
                    gallery = gr.Gallery(label="Best images (select one to open it)", columns=3, height="auto",
                                         allow_preview=False, object_fit="contain", elem_id="collection-gallery")
                    collection_json = gr.JSON(label="Results", elem_id="collection-results")
                    hit_paths = gr.State([], time_to_live=3600)
                with gr.Tab("Live", id="live"):
                    live.layout(max_regions, threshold)
                with gr.Tab("Video", id="video"):
                    video.layout(max_regions, threshold)
                with gr.Tab("Model"):
                    model_info = gr.Markdown("Loading the model…", elem_id="model-info")
                    loss_curves = gr.Image(label="Loss curves", visible=False, interactive=False,
                                           elem_id="loss-curves")

        settings, caption_out = [image, max_regions, threshold], [annotated, table, download, view]
        search_out, align_out = [search_image, matches, search_note], [align_image, aligned, align_note]
        private = {"api_visibility": "private"}  # UI-only events; the API is the four named endpoints
        model = {"concurrency_id": "model"}  # one shared limit for every event that runs the model
        on_change = {**private, **model, "trigger_mode": "always_last", "show_progress": "hidden"}
        raw = {"preprocess": False, **model}  # handlers read uploads themselves: a bad file gets a clear message

        def then_refresh(event):  # after a new analysis: its narration, then the search and alignment redone
            event.success(app.narration_outputs, view, [annotated, description, explorer, box], **private,
                          queue=False, show_progress="hidden").then(
                user_errors(app.query_on_change), [phrase, top_k, view], search_out, **on_change).then(
                user_errors(app.align_on_change), [sentence, view], align_out, **on_change).then(
                app.candidate_rows, [view], candidates, **private, trigger_mode="always_last", show_progress="hidden")

        caption_on_change, box_handler = user_errors(app.caption_on_change), user_errors(app.caption_box)
        box_ui = user_errors(app.caption_box_ui)
        then_refresh(run.click(user_errors(app.caption), settings, caption_out, api_name="caption", **raw))
        # The page's search and alignment are the as-you-type handlers (pictures with their text alternatives,
        # problems in the note); the API's /query and /align sit on hidden buttons and return plain files.
        query_api, align_api = gr.Button(visible=False), gr.Button(visible=False)
        query_api.click(user_errors(app.query), [phrase, top_k, *settings, view], [search_image, matches, view],
                        api_name="query", **raw)
        then_refresh(box_button.click(box_ui, [box, *settings, view], [*caption_out, box_note],
                                      api_name="caption_box_ui", **raw, **private))
        box_api = gr.Button(visible=False)  # /caption_box for gradio_client: raises on a malformed box
        then_refresh(box_api.click(box_handler, [box, *settings, view], caption_out, api_name="caption_box", **raw))
        align_api.click(user_errors(app.align), [sentence, *settings, view], [*align_out, view], api_name="align",
                        **raw)
        then_refresh(image.change(caption_on_change, settings, caption_out, api_name="caption_on_change",
                                  trigger_mode="always_last", **raw, **private))
        for name, slider in (("max_regions", max_regions), ("threshold", threshold)):
            then_refresh(slider.release(caption_on_change, settings, caption_out, api_name=f"caption_on_{name}", **raw,
                                        **private))
        then_refresh(box.submit(box_ui, [box, *settings, view], [*caption_out, box_note],
                                api_name="caption_box_on_submit", **raw, **private))
        then_refresh(annotated.select(user_errors(app.click_corner), [box, view],
                                      [*caption_out[:3], box, box_note, view], api_name="click_corner", **private,
                                      **model))
        for name, trigger in (("phrase", phrase.change), ("phrase_submit", phrase.submit), ("top_k", top_k.release)):
            trigger(user_errors(app.query_on_change), [phrase, top_k, view], search_out, api_name=f"query_on_{name}",
                    **on_change)
        for name, trigger in (("change", sentence.change), ("submit", sentence.submit)):
            trigger(user_errors(app.align_on_change), [sentence, view], align_out, api_name=f"align_on_{name}",
                    **on_change)
        part.input(app.box_for_part, [part, view], box, api_name="box_for_part", **private, queue=False)
        speak.click(None, None, None, js=SPEAK_JS, api_visibility="private")
        demo.load(app.model_panel, None, [banner, model_info, loss_curves], api_name="model_panel", **private)
        uploads.upload(user_errors(app.add_photos), uploads, collection_note, api_name="add_photos", **private,
                       **model)
        search_args = {"inputs": [collection_query, collection_k], "outputs": [gallery, collection_json, hit_paths],
                       **model}
        collection_query.submit(user_errors(app.search_collection), api_name="search", **search_args)
        collection_k.release(user_errors(app.search_collection), api_name="search_on_top_k", **search_args,
                             **private)
        gallery.select(app.open_hit, hit_paths, [image, tabs], api_name="open_hit", **private)
        demo.unload(app.drop_session)
    return demo


def serve(demo: gr.Blocks, **launch):
    """Queue (a few requests at once, a bounded line) and launch; ``launch`` overrides the defaults."""
    demo.queue(default_concurrency_limit=4, max_size=64)
    defaults = {"server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")), "share": False,
                "max_file_size": MAX_FILE_SIZE, "ssr_mode": False, "footer_links": ["api", "settings"],
                "theme": THEME, "css": CSS}
    return demo.launch(**{**defaults, **launch})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    serve(build_app())
