"""Sizing texts the simulator never tokenizes."""

from __future__ import annotations

import pytest

from sim.texts import RATIO_TEXT_CHARS, answer_label, estimate_tokens, ratio_text


@pytest.mark.parametrize("chars_per_token", [3.2, 4.0, 4.635, 5.5])
def test_the_text_a_ratio_was_measured_on_keeps_its_measured_count(chars_per_token):
    assert estimate_tokens(ratio_text(), chars_per_token) == round(
        RATIO_TEXT_CHARS / chars_per_token
    )


def test_digits_punctuation_and_line_breaks_cost_a_token_each():
    # "\n\n[1] " is six tokens to SmolLM2's tokenizer; characters over the ratio made it one
    assert estimate_tokens(answer_label(1), 4.635) == 5
    assert estimate_tokens(answer_label(12), 4.635) == 6
    assert estimate_tokens("Trains at 9:40 and 13:15.", 4.635) >= 9


def test_words_alone_cost_less_per_character_than_the_ratio_says():
    # the measured ratio counts the sample text's punctuation too; words take more characters
    words = "the harbour town woke before dawn and the boats slipped out past the breakwater"
    estimate = estimate_tokens(words, 4.635)
    assert len(words) / (1.3 * 4.635) < estimate < len(words) / 4.635
    assert estimate_tokens("", 4.635) == 0
    assert estimate_tokens("a", 4.635) == 1
