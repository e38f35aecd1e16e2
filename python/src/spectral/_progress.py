"""A progress bar when tqdm is installed, none otherwise: tqdm is optional.

Used by Model.encode and by tools/corpus/embed_corpus.py.
"""

from __future__ import annotations

from typing import Any, Optional


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True) -> Optional[Any]:
    """A tqdm bar of `total` steps on stderr (a widget in a notebook), or None: when
    not enabled, or when tqdm is not installed (then silently, as asked)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit)
