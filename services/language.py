"""Language of a text, for clients that don't say (OpenAI's API has no language field)."""

from __future__ import annotations

import threading
from functools import lru_cache

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from services.engine.languages import XTTS_LANGUAGES, tokenizer_language

# py3langid's codes (ISO 639-1, as coqui's tokenizer keys them) for XTTS's languages: "zh" -> "zh-cn"
_XTTS_BY_LANGID = {tokenizer_language(code): code for code in XTTS_LANGUAGES}
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
