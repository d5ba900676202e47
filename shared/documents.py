"""Documents: stored once in Redis under their content hash, read back whole or by byte range.

Tasks receive the document id, never the text: a 4 MB document passed as a task argument costs a hundred
milliseconds per message, its key almost nothing. Byte ranges (GETRANGE) let a chunk task read just its chunk.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel

from shared.errors import NotText, TooLarge
from shared.keyspace import Keyspace
from shared.settings import Settings
from shared.store import redis_client
from shared.tokens import count_tokens

#: A document's id: the sha256 of its UTF-8 bytes.
DOCUMENT_ID = re.compile(r"[0-9a-f]{64}")


class DocumentInfo(BaseModel):
    id: str
    tokens: int
    bytes: int
    chars: int


def decode_text(data: bytes, name: str = "document") -> str:
    """UTF-8 text or a `NotText` that says where it stopped being text."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise NotText(f"{name} is binary, not text (NUL byte at offset {nul})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotText(f"{name} is not UTF-8 text (invalid byte at offset {error.start})") from None
    return text.removeprefix("\ufeff")


class DocumentStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis_client(settings)
        self.binary = redis_client(settings, decode=False)
        self.keys = Keyspace.of(settings, self.redis)
        self.ttl = settings.document_processing.document_ttl_seconds

    def _key(self, document_id: str) -> str:
        return self.keys.tagged("doc", document_id)

    def _meta_key(self, document_id: str) -> str:
        return self.keys.tagged("doc", document_id, "meta")

    def _reference_key(self, document_id: str, owner: str) -> str:
        return self.keys.tagged("doc", document_id, "ref", owner)

    def put(self, text: str, owner: str | None = None) -> DocumentInfo:
        """Store the text (once per content, whoever stores it) and the owner's reference to it; return its id and
        size. Storing it again refreshes its TTL. A text past `max_document_bytes` is `TooLarge`."""
        data = text.encode("utf-8")
        limit = self.settings.document_processing.max_document_bytes
        if len(data) > limit:
            raise TooLarge(f"document larger than the limit of {limit:,} bytes")
        document_id = hashlib.sha256(data).hexdigest()
        info = self.info(document_id)
        with self.redis.pipeline(transaction=True) as pipe:
            if info is None:
                info = DocumentInfo(id=document_id, tokens=count_tokens(text), bytes=len(data), chars=len(text))
                pipe.set(self._key(document_id), data, ex=self.ttl)
                pipe.hset(self._meta_key(document_id), mapping=info.model_dump(exclude={"id"}))
            else:
                pipe.expire(self._key(document_id), self.ttl)
            pipe.expire(self._meta_key(document_id), self.ttl)
            if owner is not None:
                pipe.set(self._reference_key(document_id, owner), "1", ex=self.ttl)
            pipe.execute()
        return info

    def referenced_by(self, document_id: str, owner: str) -> bool:
        """Whether `owner` stored this document (each tenant sees only its own reference to shared content)."""
        return bool(self.redis.exists(self._reference_key(document_id, owner)))

    def info(self, document_id: str) -> DocumentInfo | None:
        meta = self.redis.hgetall(self._meta_key(document_id))
        if not meta or not self.redis.exists(self._key(document_id)):
            return None
        return DocumentInfo(id=document_id, **{name: int(value) for name, value in meta.items()})

    def text(self, document_id: str) -> str | None:
        data = self.binary.get(self._key(document_id))
        return data.decode("utf-8") if data is not None else None

    def read(self, document_id: str, start_byte: int, end_byte: int) -> str:
        """The text of bytes [start, end): chunk boundaries are character boundaries, so this always decodes."""
        if end_byte <= start_byte:
            return ""
        return self.binary.getrange(self._key(document_id), start_byte, end_byte - 1).decode("utf-8")
