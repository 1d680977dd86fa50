"""The languages XTTS v2 speaks (a custom checkpoint may speak fewer: see TTSEngine.languages)."""

from __future__ import annotations

XTTS_LANGUAGES: tuple[str, ...] = (
    "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu", "ko", "ja", "hi",
)  # fmt: skip


def tokenizer_language(language: str) -> str:
    """coqui's tokenizer keys languages without the region ("zh-cn" -> "zh")."""
    return language.split("-")[0]
