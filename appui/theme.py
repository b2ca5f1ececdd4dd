"""The page's look where accessibility needs it: text that keeps WCAG AA contrast (4.5:1) on the
default theme's colours, and a visible keyboard focus on the region buttons."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402

THEME = gr.themes.Default()
CSS = """
#region-explorer .region-list { list-style: none; margin: 0; padding: 0;
  display: flex; flex-direction: column; gap: 4px; }
#region-explorer .region-button { text-align: left; width: 100%; padding: 6px 10px; border-radius: 6px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary);
  color: var(--body-text-color); min-height: 24px; }
#region-explorer .region-button:focus-visible { outline: 3px solid #1d4ed8; outline-offset: 2px; }
"""
