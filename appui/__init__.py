"""Gradio handlers of the web app (the page itself is laid out in ``app.py``)."""
