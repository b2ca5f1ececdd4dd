"""Names the app's modules had before ``appui/common.py`` was split by job, for code not yet moved to
the new modules (``appui/live.py``: ``MAX_PHRASE``, ``THRESHOLD_HOW``, ``_settings``; tests and benchmarks:
``ModelHolder``). New code imports from ``appui.settings``, ``appui.model``, ``appui.files``,
``appui.inputs``, ``appui.view`` and ``appui.matching``."""

from appui.matching import THRESHOLD_HOW  # noqa: F401
from appui.model import ModelHolder  # noqa: F401
from appui.settings import MAX_PHRASE  # noqa: F401
from appui.inputs import parse_settings as _settings  # noqa: F401
