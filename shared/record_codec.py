"""A finished job record packed small: what `GET` and an audit read, deflated against a dictionary of a record.

A finished record never changes and is kept an hour (a synchronous request) to a week (an async job), so what it
costs is paid by every request for that long. As a hash of thirty JSON fields it costs Redis about 4.6 KB: most of
it the hash table's own overhead per field, the rest the plan and the analysis. Finished, it is kept as three
fields instead: its status (which the store's scripts read), its delivery count (which another delivery may have
raised after the finishing worker read the record) and the rest as one deflate stream. Two things make that stream
small: what `analyze` recomputes from the request (intent scores, the feature vector, the calibration's
thresholds), the models planning rejected and every field still at its default are left out; and the stream is
compressed against a preset dictionary that holds a typical record, so the field names and usual values that fill
a small record cost a few bits each.

The stream is kept as base64 text, as every other field is text: a client that decodes replies (as the store's
do) reads it like the rest, for a third more bytes. Its first byte names the dictionary. A dictionary, once
shipped, never changes: records written with it stay readable; a better one is added under the next byte.
"""

from __future__ import annotations

import base64
import zlib

from shared.jobs import JobRecord

_DROPPED = {
    "status": True,  # the live fields, kept as plain hash fields
    "deliveries": True,
    "analysis": {"intent_scores": True, "features": True, "decision": {"thresholds"}},
    "plan": {"rejected"},
}

# A typical finished record (as `pack` writes it): its field names and common values are what small records repeat.
_DICTIONARY_1 = (
    b'"error":null,"document":{"id":"","original_tokens":0,"strategy":"extractive","strategy_reason":"",'
    b'"budget_tokens":0,"sent_tokens":0,"tokens_saved":0,"chunks":0,"preprocessing_cost_usd":0.0,'
    b'"summary_cache_hit":false,"summary_key":"","workers":[]},"chunks_total":null,"services":null,'
    b'"tool_calls":[],"error_kind":"server","status":429,"cache_hit":true,"reported_by_provider":false,'
    b'"stop_reason":"length","content_filter","intent":"write","search","analyze","manage","skill":"math","code",'
    b'"reasoning","extraction","writing","factual","explanation","conversation","transform","tier":"complex",'
    b'"moderate","preprocess":true,"options":{"preferred_models":[],"max_cost":0.0,"quality_target":0.95,'
    b'"temperature":0.0,"stop":[],"cache":false,"strategy":"auto"},"stream":true},"context":{},'
    b'{"id":"00000000000000000000000000000000","progress":1.0,"stage":"done","queue":"llm.simple",'
    b'"created_at":1796415915.0020392,"started_at":1796415915.0020392,"finished_at":1796415915.0020392,'
    b'"input":{"request":"x"},"analysis":{"intent":"read","skill":"transform","skill_evidence":["\'summarise\'",'
    b'"a length to fit","\'bullet\'","\'points\'"],"complexity_score":0.0428,"difficulty_evidence":[],'
    b'"tier":"simple","decision":{"quality_target":0.95,"expected_quality":0.9502,"reason":"transform request of '
    b"difficulty 0.043; at quality target 0.95 the cheaper tiers take simple up to 0.085, moderate up to 0.151, so "
    b'simple"},"tokens":{"request":10,"context":0,"document":0,"naive_prompt":107},"needs_preprocessing":false},'
    b'"plan":{"model":"gpt-6-luna","provider":"openai","fallbacks":["claude-haiku-5-5","gemini-3.1-flash-lite",'
    b'"gpt-5-nano","gemini-3.8-flash"],"reason":"first usable model of the simple chain for a read request",'
    b'"tier":"simple","max_output_tokens":1024,"estimated_input_tokens":25,"estimated_output_tokens":150,'
    b'"estimated_cost_usd":0.0000775,"baseline":{"model":"claude-opus-5-5","input_tokens":107,"output_tokens":150,'
    b'"cost_usd":0.003428},"estimated_savings_usd":0.0033505,"preprocess":false},"result":"x","stop_reason":"stop",'
    b'"model_used":"gpt-6-luna","provider_used":"openai","usage":{"input_tokens":26,"output_tokens":150},'
    b'"cost_usd":0.0000776,"baseline_cost_usd":0.003432,"savings_usd":0.0033,"savings_pct":97.7,"attempts":'
    b'[{"model":"gpt-6-luna","provider":"openai","number":1,"ok":true,"started_at":1796415915.0020392,'
    b'"duration_ms":812.5}],"worker":"celery@host (llm.simple)","billing":{"api_key_id":"kkkkkkkkkkkk",'
    b'"spend_key":"orch:spend:k","reserved_usd":0.01},"tenant":"team","sync":true}'
)
_DICTIONARIES = {1: _DICTIONARY_1}
_CURRENT = 1
_RAW_DEFLATE = -15  # no zlib header or checksum: 6 bytes less a record


def pack(record: JobRecord) -> str:
    """The record less its live fields and what can be recomputed, deflated: its dictionary's byte, then the
    stream, in base64."""
    body = record.model_dump_json(exclude=_DROPPED, exclude_defaults=True).encode()
    deflate = zlib.compressobj(9, zlib.DEFLATED, _RAW_DEFLATE, zdict=_DICTIONARIES[_CURRENT])
    return base64.b64encode(bytes([_CURRENT]) + deflate.compress(body) + deflate.flush()).decode()


def unpack(packed: str) -> str:
    """The JSON object's members (no braces) that `pack` packed, to splice with the live fields."""
    raw = base64.b64decode(packed)
    inflate = zlib.decompressobj(_RAW_DEFLATE, zdict=_DICTIONARIES[raw[0]])
    body = inflate.decompress(raw[1:]) + inflate.flush()
    return body[1:-1].decode()
