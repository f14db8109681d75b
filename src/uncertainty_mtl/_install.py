"""The pip command that adds an extra to *this* installation.

Until a release is on an index, ``pip install 'uncertainty-mtl[qm9]'`` finds nothing: an
extra is added from where the package came from. pip records that in the distribution's
``direct_url.json`` (PEP 610): a local directory (a clone, editable or not), or a VCS URL.
"""

from __future__ import annotations

import functools
import json
from importlib import metadata
from urllib.parse import unquote, urlparse

__all__ = ["install_command"]

NAME = "uncertainty-mtl"


@functools.cache
def _origin() -> dict[str, object] | None:
    try:
        text = metadata.distribution(NAME).read_text("direct_url.json")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return None
    try:
        origin = json.loads(text) if text else None
    except ValueError:
        return None
    return origin if isinstance(origin, dict) else None


def install_command(extra: str, origin: dict[str, object] | None = None) -> str:
    """``pip install ...`` that adds ``extra`` where this package was installed from: the
    clone's directory (``-e`` where it was installed editable), the same git URL and commit,
    or the index; ``origin``: a ``direct_url.json`` mapping (default: this installation's)."""
    found = (_origin() if origin is None else origin) or {}
    url = str(found.get("url", ""))
    if url.startswith("file://"):
        dir_info = found.get("dir_info")
        editable = isinstance(dir_info, dict) and dir_info.get("editable")
        return f"pip install {'-e ' if editable else ''}'{unquote(urlparse(url).path)}[{extra}]'"
    vcs = found.get("vcs_info")
    if isinstance(vcs, dict):
        commit = vcs.get("requested_revision") or vcs.get("commit_id")
        at = f"@{commit}" if commit else ""
        return f"pip install '{NAME}[{extra}] @ {vcs.get('vcs', 'git')}+{url}{at}'"
    return f"pip install '{NAME}[{extra}]'"
