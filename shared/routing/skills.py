"""Skill: what ability a request exercises, with the evidence for it.

A cheap model's shortfall is not spread evenly: it sits in math, code, multi-step reasoning and precise extraction,
and barely shows in conversation, rewriting or plain writing. The skill is read from cue words (the first words, where
the task is usually named, count double) and from structure that words miss: quantities with arithmetic, code syntax,
a blank to fill. Each skill's score is the sum of its evidence; the evidence is returned so a routing decision can
be explained in the words of the request.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, Field

from shared.routing.features import Structure, structure
from shared.routing.intent import WORD, cue_table


class Skill(StrEnum):
    math = "math"
    code = "code"
    reasoning = "reasoning"
    extraction = "extraction"
    writing = "writing"
    factual = "factual"  # a closed question with one right answer: a fact, a choice among options
    explanation = "explanation"  # what a concept is or how it works: known knowledge, put into words
    conversation = "conversation"
    transform = "transform"  # summarise, translate, rewrite: the content is given, only its form changes


class SkillReading(BaseModel):
    skill: Skill
    scores: dict[Skill, float] = Field(description="Evidence weight per skill; the largest wins.")
    evidence: list[str] = Field(description="What in the request pointed to the skill, strongest first.")


_WORD_CUES: dict[Skill, dict[str, float]] = {
    Skill.math: cue_table(
        "calculate:2 calculation:2 compute:1.5 solve:1.5 equation:2.5 equations:2.5 arithmetic:2.5 algebra:2.5 "
        "geometry:2.5 calculus:2.5 derivative:2.5 integral:2.5 integrate:2 differentiate:2.5 probability:2.5 "
        "statistics:1.5 percent:1.5 percentage:1.5 ratio:1.5 fraction:2 fractions:2 decimal:1.5 sum:1 product:0.5 "
        "quotient:2 remainder:2 divisible:2.5 divisor:2.5 multiply:2 multiplied:2 divide:1.5 divided:1.5 plus:1 "
        "minus:1.5 squared:2 cube:1 sqrt:2.5 prime:1.5 primes:2 integer:2 integers:2 polynomial:2.5 matrix:2 "
        "matrices:2 theorem:2 lemma:2.5 modulo:2.5 factorial:2.5 logarithm:2.5 exponent:2 average:1 median:1.5 "
        "variance:2 area:1 perimeter:2 volume:1 radius:2 diameter:2 circumference:2.5 angle:1.5 triangle:1.5 "
        "hypotenuse:2.5 digits:1.5 numerator:2.5 denominator:2.5 math:2.5 maths:2.5 mathematics:2.5 "
        "mathematical:2 profit:1 discount:1 interest:0.5 total:0.5 each:0.3 per:0.3 cost:0.3 costs:0.3"
    ),
    Skill.code: cue_table(
        "code:2 program:1.5 programming:2 function:2 functions:2 method:1 class:1 script:1.5 bug:2 bugs:2 "
        "debug:2.5 compile:2.5 compiler:2.5 runtime:1.5 exception:2 traceback:2.5 syntax:1.5 variable:1.5 "
        "loop:1.5 recursion:2.5 recursive:2 algorithm:2 algorithms:2 array:2 arrays:2 regex:2.5 sql:2.5 api:1.5 "
        "endpoint:2 endpoints:2 json:1 yaml:1.5 html:2 css:2 javascript:2.5 typescript:2.5 python:2.5 java:2.5 "
        "golang:2.5 rust:2 c++:2.5 c#:2.5 kotlin:2.5 swift:1.5 ruby:1.5 php:2.5 bash:2 shell:1 unittest:2.5 "
        "pytest:2.5 repository:1 refactor:2.5 implement:1.5 implementation:1 snippet:2 library:1 dataframe:2.5 "
        "pandas:2 numpy:2.5 react:2 django:2.5 flask:2 fastapi:2.5 codebase:2.5 crud:2 rest:1 backend:2 "
        "frontend:2 database:1 query:1 schema:1 returns:0.5 string:1 strings:1 list:0.5 lists:1 tuple:2 "
        "dictionary:1 integer:0.5 boolean:2 int:1.5 str:1.5 dict:2"
    ),
    Skill.reasoning: cue_table(
        "logic:2.5 logical:2 puzzle:3 riddle:3 deduce:2.5 deduction:2.5 infer:1.5 inference:1.5 conclude:1.5 "
        "conclusion:1.5 premise:2.5 premises:2.5 syllogism:3 argument:1.5 valid:1 invalid:1 fallacy:2.5 "
        "paradox:2 contradiction:2 implies:2 implication:2 therefore:1 hence:1 consistent:1 true:0.7 false:0.7 "
        "truth:1 liar:2.5 lying:2 lies:1.5 knights:2 knaves:3 arrange:1 arrangement:1.5 seating:2 order:0.5 "
        "reasoning:2 reason:0.5 think:0.5 suppose:1.5 assume:1 assumption:1.5 scenario:1 morally:1.5 "
        "ethical:1 wrong:0.5 likely:0.5 unlikely:1 must:0.5 cannot:0.5 taller:1.5 older:1 younger:1 "
        "left:0.3 right:0.3 sibling:1 siblings:1 brother:0.5 sister:0.5"
    ),
    Skill.extraction: cue_table(
        "extract:3 extraction:3 parse:2 entities:2.5 entity:2 fields:1.5 tabulate:2.5 table:1 csv:2 json:1.5 "
        "names:1 dates:1 mentioned:1.5 mentions:1.5 passage:1 excerpt:1.5 identify:1 pull:0.5 field:1 "
        "structured:1.5 format:0.5 key-value:2.5 emails:1 addresses:1"
    ),
    Skill.writing: cue_table(
        "write:1 compose:2 draft:2 story:2.5 stories:2.5 poem:3 poetry:3 essay:2.5 haiku:3 limerick:3 sonnet:3 "
        "song:2.5 lyrics:2.5 blog:2.5 post:1 article:2 letter:2 email:2 speech:2.5 toast:2 slogan:2.5 "
        "tagline:2.5 novel:2 chapter:1.5 dialogue:1.5 screenplay:3 narrative:2 creative:2 persuasive:2.5 "
        "tweet:2 caption:2 marketing:1.5 advertisement:2 ad:1 pitch:1.5 cover:0.5 invitation:2 review:0.5 "
        "describe:0.5 character:1 plot:1.5 fictional:2 imagine:1 rhyme:2.5 verse:2"
    ),
    Skill.explanation: cue_table(
        "explain:2.5 explanation:2 describe:2 define:3 definition:3 meaning:2 means:1 concept:1.5 overview:1.5 "
        "difference:1 differences:1 works:1 introduction:1.5 basics:2 eli5:3"
    ),
    Skill.factual: cue_table(
        "what:1 who:1.5 when:1.5 where:1.5 which:1 capital:2 history:1.5 "
        "historical:1.5 fact:1.5 facts:1.5 name:0.5 population:2 located:1.5 invented:2 discovered:2 born:1.5 "
        "founded:2 century:1.5 year:0.5 country:1 city:1 known:0.5 called:1 "
        "largest:1 smallest:1 tallest:1 first:0.3 president:1.5 king:1 war:1 planet:1 species:1"
    ),
    Skill.conversation: cue_table(
        "greetings:2.5 thanks:3 thank:2.5 bye:3 goodbye:3 cheers:1.5 howdy:3 "
        "chat:2 pretend:2 roleplay:2.5 yourself:1.5 you:0.3 your:0.3 feel:1 feeling:1 lol:2 haha:2"
    ),
    Skill.transform: cue_table(
        "translate:3 translation:2 translated:2.5 summarize:3 summarise:3 summary:1.5 summarization:3 tldr:3 "
        "paraphrase:3 rephrase:3 reword:3 rewrite:2 simplify:2 shorten:2.5 condense:2.5 proofread:3 grammar:2 "
        "spelling:2 punctuation:2 formal:1 informal:1 tone:1 french:1 spanish:1 german:1 italian:1 chinese:1 "
        "japanese:1 korean:1 portuguese:1 russian:1 arabic:1 hindi:1 dutch:1 english:0.5 polish:0.5 turkish:1 "
        "swedish:1 convert:1 bullet:1 points:0.3"
    ),
}


class _Phrase(NamedTuple):
    """A pattern worth its search only when one of its trigger words (or characters) is in the request."""

    pattern: re.Pattern[str]
    weight: float
    label: str
    words: frozenset[str] = frozenset()
    chars: str = ""


def _phrase(pattern: str, weight: float, label: str, words: str = "", chars: str = "", flags: int = 0) -> _Phrase:
    return _Phrase(re.compile(pattern, flags), weight, label, frozenset(words.split()), chars)


_PHRASE_CUES: dict[Skill, list[_Phrase]] = {
    Skill.math: [
        _phrase(r"\bhow (?:many|much|long|far|old)\b", 3.0, "asks 'how many/much'", "how"),
        _phrase(
            r"\bwhat is the (?:value|sum|product|probability|area|average|total)\b",
            2.0,
            "asks a value",
            "value sum product probability area average total",
        ),
        _phrase(r"\\(?:frac|sqrt|sum|int|cdot|times)|[√∑∫π≤≥≠]", 2.5, "math notation", chars="\\√∑∫π≤≥≠"),
    ],
    Skill.code: [
        _phrase(
            r"```|^\s*(?:def|class|import|from \w+ import|function|const|let|var|public|#include)\b",
            3.0,
            "code in the request",
            "def class import from function const let var public #include",
            "`",
            re.M,
        ),
        _phrase(r"\b\w+\([\w\s,.'\"]*\)\s*(?:->|=>|:|\{|;|$)", 1.5, "a call or signature", chars="(", flags=re.M),
        _phrase(
            r"\bwrite (?:a|an|the) (?:python |js |javascript |sql |bash |rust |go |java )?"
            r"(?:function|program|script|class|method|query|regex)\b",
            3.0,
            "asks for code",
            "function program script class method query regex",
        ),
    ],
    Skill.reasoning: [
        _phrase(r"(?<![\w_])_(?![\w_])", 2.5, "a blank to fill", chars="_"),
        _phrase(
            r"\bif (?:and only if|all|no|some|every)\b|\ball \w+ are\b|\bsome \w+ are\b",
            2.0,
            "a quantified premise",
            "all some",
        ),
        _phrase(
            r"\bwhich (?:of the following )?(?:must|cannot|could|is necessarily)\b",
            2.0,
            "asks what must follow",
            "must cannot could necessarily",
        ),
        _phrase(
            r"\bstep[- ]by[- ]step\b|\blet'?s think\b", 1.5, "asks for steps of reasoning", "step step-by-step think"
        ),
        _phrase(r"\bstatement 1\b.*\bstatement 2\b", 2.0, "statements to judge", "statement", flags=re.S),
        _phrase(r"\bonly if\b|\bunless\b|\bneither\b.*\bnor\b", 2.0, "a condition", "only unless neither"),
        _phrase(
            r"\bwho (?:owns|has|is|lives|sits|came|did) (?:which|what|the)\b|\beach (?:own|owns|has|have|"
            r"lives?|sits?|likes?)\b",
            2.5,
            "entities to match up",
            "who each",
        ),
        _phrase(
            r"\bdoes(?:n't| not) belong\b|\bodd one out\b|\bnext (?:number |term |letter )?in the "
            r"(?:sequence|series|pattern)\b",
            3.0,
            "a pattern to find",
            "belong odd next",
        ),
    ],
    Skill.extraction: [
        _phrase(
            r"\b(?:list|identify|extract|return|output|give) (?:all|every|each)\b",
            2.0,
            "asks for every item",
            "list identify extract return output give",
        ),
        _phrase(
            r"\bfrom (?:the|this|these|following|above|below) (?:text|passage|document|article|email|"
            r"data|table|paragraph|review|reviews|list)",
            2.5,
            "reads a given text",
            "text passage document article email data table paragraph review reviews list",
        ),
        _phrase(r"\b(?:in|as) (?:json|csv|yaml|a table)\b", 2.0, "asks for a structured format", "json csv yaml table"),
    ],
    Skill.writing: [
        _phrase(
            r"\b(?:write|compose|draft|create) (?:a|an|the|me a|some) (?:short |brief |funny |formal |"
            r"persuasive |catchy |heartfelt )?(?:story|poem|essay|email|letter|blog|article|speech|song|"
            r"haiku|tweet|post|description|toast|slogan|review)",
            3.0,
            "asks for a piece of writing",
            "write compose draft create",
        ),
    ],
    Skill.explanation: [
        _phrase(
            r"^(?:define|what does .{1,40} mean|what is meant by|what (?:is|are) (?:a|an)\b|how (?:does|do) "
            r".{1,60} work|tell me about|give me an overview)",
            4.0,
            "asks what something is or how it works",
        ),
    ],
    Skill.factual: [
        _phrase(r"^(?:what|who|when|where|which) (?:is|was|are|were|did|does)\b", 1.5, "a factual question"),
    ],
    Skill.conversation: [
        _phrase(r"^(?:hi|hello|hey|good (?:morning|afternoon|evening|night)|yo)\b", 3.0, "a greeting"),
        _phrase(
            r"\bhow are you\b|\bwhat'?s up\b|\bnice to meet\b|\bwho are you\b|\byour name\b",
            3.0,
            "small talk",
            "you what's whats meet your",
        ),
        _phrase(
            r"\b(?:act|pretend|behave) (?:as|like)\b|\bimagine you are\b|\byou are an? \w+",
            2.0,
            "a role to play",
            "act pretend behave imagine you",
        ),
    ],
    Skill.transform: [
        _phrase(
            r"\b(?:into|to|in) (?:french|spanish|german|italian|chinese|japanese|korean|portuguese|russian|"
            r"arabic|hindi|dutch|english|polish|turkish|swedish|plain english|simple terms)\b",
            2.5,
            "into another language or register",
            "french spanish german italian chinese japanese korean portuguese russian arabic hindi dutch "
            "english polish turkish swedish plain simple",
        ),
        _phrase(
            r"\btl;?dr\b|\bin (?:one|two|three|a few|\d+) (?:sentences?|words|bullet points|lines)\b",
            2.0,
            "a length to fit",
            "tl tldr sentence sentences words bullet lines",
        ),
    ],
}

_CUES: dict[str, tuple[tuple[Skill, float], ...]] = {}
for _skill, _words in _WORD_CUES.items():
    for _word, _weight in _words.items():
        _CUES[_word] = (*_CUES.get(_word, ()), (_skill, _weight))
_SCAN_CHARS = 4000
_MIN_EVIDENCE = 2.5  # a lone incidental word ("speech" in a legal question) does not make a skill


def read_skill(text: str, words: list[str] | None = None, shape: Structure | None = None) -> SkillReading:
    """The request's skill, from cue words, phrases and structure in its first few thousand characters.

    `words` (the lower-cased words) and `shape` (its structure) are passed when the caller has them already.
    """
    head = text[:_SCAN_CHARS]
    lower = head.lower()
    scores = dict.fromkeys(Skill, 0.0)
    evidence: dict[Skill, list[tuple[float, str]]] = {skill: [] for skill in Skill}

    words = WORD.findall(lower) if words is None else words
    for position, word in enumerate(words):
        cues = _CUES.get(word)
        if cues:
            boost = 2.0 if position < 3 else 1.0
            for skill, weight in cues:
                scores[skill] += weight * boost
                evidence[skill].append((weight * boost, f"'{word}'"))

    present = set(words)
    for skill, phrases in _PHRASE_CUES.items():
        for phrase in phrases:
            triggered = not (phrase.words or phrase.chars) or not present.isdisjoint(phrase.words)
            if not triggered and phrase.chars:
                triggered = any(char in head for char in phrase.chars)
            if triggered and phrase.pattern.search(lower):
                scores[skill] += phrase.weight
                evidence[skill].append((phrase.weight, phrase.label))

    shape = shape or structure(head, words)
    numbers, arithmetic = shape.numbers, shape.arithmetic
    if numbers >= 2 or arithmetic:
        weight = min(4.0, 0.5 * numbers + 1.5 * arithmetic)
        scores[Skill.math] += weight
        evidence[Skill.math].append(
            (weight, f"{numbers} numbers" + (f", {arithmetic} operations" if arithmetic else ""))
        )

    skill = max(scores, key=scores.__getitem__)
    if scores[skill] < _MIN_EVIDENCE:
        fallback = Skill.conversation if len(words) <= 2 and "?" not in head else Skill.factual
        return SkillReading(skill=fallback, scores=scores, evidence=["no clear cue: a question or statement to answer"])
    ranked = sorted(evidence[skill], key=lambda item: -item[0])
    labels = list(dict.fromkeys(label for _, label in ranked))[:6]
    return SkillReading(skill=skill, scores={s: round(v, 2) for s, v in scores.items()}, evidence=labels)
