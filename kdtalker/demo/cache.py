"""Gradio's folder for the demo: its uploads and its copies of the results, the server's own, removed when it stops.

Gradio's default folder (TMPDIR/gradio) is shared by every Gradio app and keeps what it holds after the server
stops, the uploads of failed requests included. Gradio reads GRADIO_TEMP_DIR when it is imported (some folders)
and when the page is built and served (the uploads), so this is entered before `import gradio`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

VARIABLE = "GRADIO_TEMP_DIR"


@contextmanager
def gradio_cache() -> Iterator[Path]:
    """A fresh temporary folder as Gradio's (GRADIO_TEMP_DIR) inside; removed, and the variable restored, after.
    It is made in the user's GRADIO_TEMP_DIR where one is set (a roomier disk, say), else in TMPDIR."""
    previous = os.environ.get(VARIABLE)
    if previous:
        os.makedirs(previous, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="kdtalker_gradio_", dir=previous or None))
    os.environ[VARIABLE] = str(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = previous
