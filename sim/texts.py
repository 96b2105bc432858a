"""Prompt texts shared by the simulator (which only counts their tokens) and the live runner."""

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

AGGREGATE_HEADER = (
    "Below are answers to the user's question from several assistants; some may be "
    "unfinished or wrong. Combine them into one accurate, well-written answer of your own."
    "\n\nAnswers:"
)


def answer_label(index: int) -> str:
    return f"\n\n[{index}] "


def estimate_tokens(text: str) -> int:
    """Token count of English text for a SmolLM2/Llama-style BPE (about 4 characters each).

    Only the simulator uses this, for fixed texts; live runs count real tokens.
    """
    return max(1, round(len(text) / 4)) if text else 0


# Chat-template framing per message (ChatML: "<|im_start|>role\n" ... "<|im_end|>\n").
MESSAGE_OPEN_TOKENS = 3
MESSAGE_CLOSE_TOKENS = 2
