"""Language of a text, for clients that don't say (OpenAI's API has no language field)."""

from __future__ import annotations

import threading
from functools import lru_cache

from py3langid.langid import MODEL_FILE, LanguageIdentifier

# py3langid's codes for XTTS's languages
_XTTS_BY_LANGID = {
    code: code
    for code in ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "hu", "ko", "ja", "hi")
}
_XTTS_BY_LANGID["zh"] = "zh-cn"
MIN_CONFIDENCE = 0.5
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _identifier() -> LanguageIdentifier:
    # The model ships inside the package (numpy arrays, no pickle); restricted to what XTTS speaks.
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(_XTTS_BY_LANGID))
    return identifier


def detect_language(text: str, default: str) -> str:
    """The XTTS language code of `text`, or `default` when the detector is unsure (short or mixed text)."""
    with _lock:  # the identifier keeps scratch state between calls
        code, confidence = _identifier().classify(text)
    if confidence < MIN_CONFIDENCE:
        return default
    return _XTTS_BY_LANGID.get(code, default)
