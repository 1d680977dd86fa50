"""What `make bench` speaks: the cases (text and pinned audio tokens), the voice, and coqui's repetition penalty."""

from __future__ import annotations

SPEAKER = "Dummy Alto"
REPETITION_PENALTY = 5.0
CASES: dict[str, tuple[str, int]] = {
    # name: (text, audio tokens per sentence); ~46 ms of audio per token
    "short": ("Hello! How can I help you today?", 60),
    "paragraph": (
        "The committee met on a grey Tuesday morning to review the budget, the hiring plan and the long list of "
        "repairs that the old building needed before winter, and after three hours they agreed on almost nothing",
        400,
    ),
    "long": (
        "Once upon a time there was a lighthouse keeper who lived alone on a rock in the northern sea. "
        "Every night he climbed the narrow stairs and lit the great lamp for ships he would never meet. "
        "One winter a small boat came through the storm, and its captain knocked on his door at dawn.",
        150,
    ),
}
