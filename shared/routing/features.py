"""The structure of a request that bears on how hard it is: quantities, operations, code, conditions, length.

Read from the request's focus, its last paragraph: where a prompt carries worked examples, a quoted text or earlier
turns before the question, the question is what decides whether a cheap model keeps up, and a long preamble would
otherwise drown it. The model reads every count squashed by log1p (or a share), so a feature grows with evidence and
no single long request dominates what was learned.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from shared.routing.intent import WORD

#: Feature names in the order the difficulty model's weights are stored.
STRUCTURE_FEATURES = (
    "words",
    "numbers",
    "arithmetic",
    "code",
    "negations",
    "conditions",
    "questions",
    "sentences",
    "long_words",
)

_FOCUS_CHARS = 4000
_DIGIT = re.compile(r"\d")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,/]\d+)*")
_ARITHMETIC = re.compile(r"\d\s*[-+*/×÷^=<>]\s*[\d(]|\d\s*%|\$\d")
_MATH_NOTATION = ("\\frac", "\\sqrt", "√", "∑", "∫", "≤", "≥", "≠")
_CODE_MARKS = ("```", "==", "!=", "=>", "->", "{", "}", ";")
_CODE_CALL = re.compile(r"\w\(\w*\)")
_CODE_WORDS = frozenset("def return class import lambda elif func fn const var".split())
_NEGATIONS = frozenset("not no never none neither nor except cannot without least false incorrect".split())
_CONDITIONS = frozenset("if unless only each every all must then therefore given suppose assume both".split())
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


@dataclass(frozen=True, slots=True)
class Structure:
    """Counts of what a request's text holds; `features` is how the difficulty model reads them."""

    words: int
    numbers: int
    arithmetic: int
    code: int
    negations: int
    conditions: int
    questions: int
    sentences: int
    long_words: float  # share of words of nine letters or more

    @property
    def features(self) -> dict[str, float]:
        return {
            name: (self.long_words if name == "long_words" else math.log1p(getattr(self, name)))
            for name in STRUCTURE_FEATURES
        }


def focus(text: str) -> str:
    """The last paragraph that has words in it, at most a few thousand characters from its end."""
    stripped = text.rstrip()
    cut = stripped.rfind("\n\n")
    while cut > 0 and not any(char.isalpha() for char in stripped[cut:]):
        cut = stripped.rfind("\n\n", 0, cut)
    return stripped[cut + 2 if cut >= 0 else 0 :][-_FOCUS_CHARS:]


def structure(text: str, words: list[str] | None = None) -> Structure:
    """What `text` (usually `focus(request)`) holds; `words` are its lower-cased words if already split."""
    words = WORD.findall(text.lower()) if words is None else words
    has_digits = _DIGIT.search(text) is not None
    arithmetic = len(_ARITHMETIC.findall(text)) if has_digits else 0
    return Structure(
        words=len(words),
        numbers=len(_NUMBER.findall(text)) if has_digits else 0,
        arithmetic=arithmetic + sum(text.count(mark) for mark in _MATH_NOTATION),
        code=sum(text.count(mark) for mark in _CODE_MARKS)
        + (len(_CODE_CALL.findall(text)) if "(" in text else 0)
        + sum(1 for word in words if word in _CODE_WORDS),
        negations=sum(1 for word in words if word in _NEGATIONS) + text.count("n't"),
        conditions=sum(1 for word in words if word in _CONDITIONS),
        questions=text.count("?"),
        sentences=len(_SENTENCE_END.findall(text)),
        long_words=sum(1 for word in words if len(word) >= 9) / len(words) if words else 0.0,
    )
