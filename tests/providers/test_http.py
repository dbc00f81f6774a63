"""What the HTTP helpers shared by providers do to upstream text before anyone sees it."""

from __future__ import annotations

import pytest

from gearshift.providers.http import scrub

KEY = "sk-UPSTREAMKEY00001111"


@pytest.mark.parametrize(("text", "want"), [
    (f"bad key {KEY}", "bad key ***"),
    ("Incorrect API key provided: sk-UPSTR...1111.", "Incorrect API key provided: ***."),
    ("key sk-UPST****************1111 refused", "key *** refused"),
    ("key:sk-UP…111 refused", "key:*** refused"),
    ("a run sk-UPSTREA of its start", "a run *** of its start"),
    ("or EY00001111 its end", "or *** its end"),
])
def test_scrub_masks_the_key_and_its_fragments(text: str, want: str) -> None:
    assert scrub(text, KEY) == want


@pytest.mark.parametrize("text", ["between 42...17 and 3***5", "sk-other...9999", "no secrets here", "sk-ab...ab"])
def test_scrub_leaves_text_that_is_not_the_key(text: str) -> None:
    assert scrub(text, KEY) == text
    assert scrub(text, None) == text
