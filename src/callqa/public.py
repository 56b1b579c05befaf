"""Error messages that leave the service: what went wrong, without the server's paths.

Decoding errors name the file they are about; for a spooled upload or a fetched recording that name is a path
on the server (``/var/lib/callqa/spool/<job>/0-agent.wav``). Before such a message is stored with a job or
returned, each spooled file's path becomes the label the client knows it by (``upload:agent.wav``) and any
other path under the service's data or temporary directories becomes its last component.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from pathlib import Path


def public_message(text: str, files: Iterable[str] = (), labels: Iterable[str] = (),
                   roots: Iterable[str | Path] = ()) -> str:  # fmt: skip
    """``text`` with the given ``files`` replaced by their ``labels`` and paths below ``roots`` (and the system's
    temporary directory) cut to their file names."""
    for f, label in zip(files, labels, strict=False):
        text = text.replace(str(f), label)
    for root in {*(str(r) for r in roots), tempfile.gettempdir()}:
        root = root.rstrip("/")
        if root:
            text = re.sub(re.escape(root) + r"/(?:[^\s/'\"]+/)*", "", text)
    return text
