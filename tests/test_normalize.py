"""classifier.normalize.normalize_text: the canonical form fed to the tokenizer."""

from __future__ import annotations

import pytest

from classifier.normalize import normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # NFKC: full-width letters / digits / punctuation fold onto ASCII
        ("ＰａｙＰａｌ　ｌｏｇｉｎ！", "PayPal login!"),
        ("Ｃｏｄｅ：１２３４", "Code:1234"),
        # styled maths letters and ligatures used to dodge keyword filters
        ("\U0001d41f\U0001d42b\U0001d41e\U0001d41e prize", "free prize"),
        ("ﬁnal notice", "final notice"),
        # zero-width characters inside words are removed, joining the word back
        ("pa\u200bypal", "paypal"),
        ("ve\u200cri\u200dfy", "verify"),
        ("ba\u2060nk\ufeff", "bank"),
        ("pass\u00adword", "password"),
        # bidi / format controls removed
        ("\u202eclick\u202c here", "click here"),
        # C0/C1 control characters removed (not turned into spaces)
        ("he\x00llo\x07 wor\x1bld\x7f\x85", "hello world"),
        # whitespace: tabs, newlines, NBSP, ideographic space collapse to one space, trimmed
        ("  Your\tcode\n\nis\r\n 1234  ", "Your code is 1234"),
        ("a\u00a0\u00a0b\u3000c", "a b c"),
        # emoji and non-Latin scripts are kept
        ("Win 🎉🎁 now", "Win 🎉🎁 now"),
        ("ваш код 1234 😀", "ваш код 1234 😀"),
        ("您的验证码是 8812", "您的验证码是 8812"),
        ("رمز التحقق 5521", "رمز التحقق 5521"),
        # private-use characters removed
        ("bank\ue000 alert", "bank alert"),
        ("", ""),
        (" \t\n ", ""),
    ],
)
def test_normalize_cases(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalize_is_idempotent() -> None:
    samples = ["ＰａｙＰａｌ pa\u200bypal\t\tlogin 🎉", "ﬁ  x\u00ad y", "plain text"]
    for s in samples:
        once = normalize_text(s)
        assert normalize_text(once) == once


def test_emoji_variation_selector_kept() -> None:
    # U+FE0F (emoji presentation) is a combining mark, not a format char: kept
    assert normalize_text("I \u2764\ufe0f you") == "I \u2764\ufe0f you"
