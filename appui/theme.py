"""The page's look where accessibility needs it (WCAG 2.2 AA, checked by tests/test_accessibility.py):

* Gradio's default orange (#f97316) carries white text at 2.8:1 on the primary button and is the selected
  tab's text colour on white (2.8:1): the primary hue is shifted two shades darker (#c2410c: 5.2:1).
* Subdued text (info lines, slider ends, "- or -", the footer links) is neutral-400 (#bbbbc2, 1.9:1):
  neutral-600 here (7.7:1); dark mode keeps its own.
* The JSON view's string and number colours (2.6:1, 2.9:1) are darkened; the pictures' toolbar buttons
  and the download link get WCAG 2.2's 24 × 24 px target size.
* The region buttons (appui/narration.py) get a visible keyboard focus.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402

_orange = gr.themes.colors.orange
DARK_ORANGE = gr.themes.Color(  # orange, two shades darker from 400 on
    c50=_orange.c50, c100=_orange.c100, c200=_orange.c200, c300=_orange.c300, c400=_orange.c600,
    c500=_orange.c700, c600=_orange.c800, c700=_orange.c900, c800=_orange.c950, c900=_orange.c950,
    c950=_orange.c950, name="dark_orange")
THEME = gr.themes.Default(primary_hue=DARK_ORANGE).set(body_text_color_subdued="*neutral_600",
                                                      body_text_color_subdued_dark="*neutral_400")
CSS = """
#region-explorer .region-list { list-style: none; margin: 0; padding: 0;
  display: flex; flex-direction: column; gap: 4px; }
#region-explorer .region-button { text-align: left; width: 100%; padding: 6px 10px; border-radius: 6px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary);
  color: var(--body-text-color); font-size: var(--text-md); font-weight: normal; min-height: 24px; }
#region-explorer .region-button:focus-visible { outline: 3px solid #1d4ed8; outline-offset: 2px; }
.json-node .value.string { color: #9a3412; }
.json-node .value.number { color: #155e75; }
button.icon-button { min-width: 24px; min-height: 24px; }
a.download-link { display: inline-flex; min-width: 24px; min-height: 24px; }
"""
