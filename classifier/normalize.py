"""Text normalisation applied before tokenization, at training and at inference time alike.

NFKC folds compatibility forms (full-width letters, ligatures, styled maths letters used to dodge
filters) onto plain ones; zero-width and other format/control characters (often inserted to split
keywords like "pa\u200bypal") are removed; every run of whitespace becomes one space.
"""

from __future__ import annotations

import re
import unicodedata

_WS_RE = re.compile(r"\s+")

# Characters that carry no visible content and are used to obfuscate words.
_INVISIBLE = {
    "\u200b",  # zero width space
    "\u200c",  # zero width non-joiner
    "\u200d",  # zero width joiner
    "\u2060",  # word joiner
    "\ufeff",  # zero width no-break space / BOM
    "\u00ad",  # soft hyphen
    "\u180e",  # mongolian vowel separator
}


def _keep(ch: str) -> bool:
    if ch in _INVISIBLE:
        return False
    cat = unicodedata.category(ch)
    if cat == "Cc":  # control characters: keep the whitespace ones, collapsed below
        return ch in "\t\n\r\x0b\x0c"
    # Cf = format (bidi marks, joiners ...), Co = private use, Cs = lone surrogates
    return cat not in ("Cf", "Co", "Cs")


def normalize_text(text: str) -> str:
    """Return the canonical form of an SMS text for the classifier."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if _keep(ch))
    return _WS_RE.sub(" ", text).strip()
