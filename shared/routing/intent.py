"""Intent: what operation a request asks for (read, write, search, analyze, manage).

Weighted cue words. The first word (the imperative verb or question word) counts three times and the next two one
and a half: "find the bug and fix it" is a search that leads to a write, "fix the bug you find" is a write. Intent
says what the answer must do (it shapes the prompt and which downstream tools are offered); how hard the request is
for a cheap model is the difficulty's business, not the intent's.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Intent(StrEnum):
    read = "read"
    write = "write"
    search = "search"
    analyze = "analyze"
    manage = "manage"


def cue_table(spec: str) -> dict[str, float]:
    """`"word:2 other:1.5"` as a mapping: a lexicon that reads as a list of words, not a page of braces."""
    return {word: float(weight) for word, weight in (item.rsplit(":", 1) for item in spec.split())}


_INTENT_CUES: dict[Intent, dict[str, float]] = {
    Intent.read: cue_table(
        "read:2 show:2 display:2 get:1 fetch:1.5 open:1.5 print:1 view:1.5 summarize:2 summarise:2 summary:1.5 "
        "tldr:2 what:1 who:1 when:1 define:2 definition:1.5 meaning:1 tell:1 describe:1.5 explain:1 translate:1.5 "
        "recall:1 content:0.5 contents:1 load:1"
    ),
    Intent.write: cue_table(
        "write:2.5 create:2.5 generate:2 implement:2.5 build:2 draft:2 compose:2 add:1.5 fix:2 refactor:2.5 "
        "rewrite:2.5 convert:1.5 edit:2 update:1.5 modify:2 change:1 code:1 function:1 class:1 endpoint:1 api:0.5 "
        "script:1 test:1 tests:1 email:1 letter:1 essay:1.5 poem:2 story:1.5 design:2.5 make:1 develop:2 crud:1.5 "
        "rest:0.5 append:1.5 insert:1.5 save:1 document:0.5 port:1"
    ),
    Intent.search: cue_table(
        "find:2.5 search:3 locate:2.5 lookup:2 look:1 where:2 which:1 grep:3 list:1.5 occurrences:2 occurrence:2 "
        "query:1 filter:1.5 match:1 matching:1.5 discover:1.5 retrieve:1.5 index:0.5 contains:1 containing:1.5 "
        "mentions:1.5"
    ),
    Intent.analyze: cue_table(
        "analyze:3 analyse:3 analysis:2.5 review:2.5 compare:2.5 comparison:2 evaluate:2.5 assess:2.5 audit:2.5 "
        "why:2 debug:2 diagnose:2.5 investigate:2.5 explain:1.5 critique:2.5 benchmark:1.5 profile:1.5 "
        "trade-offs:2 tradeoffs:2 pros:1.5 cons:1.5 root:1 cause:1 vulnerabilities:2 vulnerability:2 risk:1.5 "
        "risks:1.5 performance:1 bottleneck:2 bottlenecks:2 improve:1 improvements:1.5 quality:1 insights:1.5 "
        "patterns:1 trend:1.5 trends:1.5 metrics:0.5 reason:1"
    ),
    Intent.manage: cue_table(
        "deploy:3 deployment:2 restart:3 configure:2.5 install:2.5 schedule:2 delete:2 remove:1.5 migrate:2 "
        "migration:1 scale:1 monitor:2 provision:3 backup:2.5 restore:2.5 rollback:3 roll:1 manage:3 upgrade:2 "
        "start:1 stop:1.5 kill:1.5 cron:1 kubernetes:1.5 k8s:1.5 docker:1 cluster:1 server:0.5 service:0.5 "
        "permissions:1.5 rotate:2 archive:1.5 move:1 rename:1.5 setup:2 enable:1.5 disable:1.5 grant:2 revoke:2 "
        "pod:1 pods:1 nginx:1"
    ),
}
_CUES: dict[str, tuple[tuple[Intent, float], ...]] = {}
for _intent, _words in _INTENT_CUES.items():
    for _word, _weight in _words.items():
        _CUES[_word] = (*_CUES.get(_word, ()), (_intent, _weight))

WORD = re.compile(r"[a-z0-9][a-z0-9+#_-]*")


def intent_scores(words: list[str]) -> dict[Intent, float]:
    """Each intent's cue weight in the request's lower-cased words, the first words counting most."""
    scores = dict.fromkeys(Intent, 0.0)
    for position, word in enumerate(words):
        cues = _CUES.get(word)
        if cues:
            boost = 3.0 if position == 0 else 1.5 if position < 3 else 1.0
            for intent, weight in cues:
                scores[intent] += weight * boost
    return {intent: round(value, 2) for intent, value in scores.items()}


def classify_intent(scores: dict[Intent, float]) -> Intent:
    """The strongest intent; a request with no cue at all is a read."""
    return max(scores, key=scores.__getitem__) if any(scores.values()) else Intent.read
