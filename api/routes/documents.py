"""Documents: stored once under their content hash, referenced by jobs with `document_id`."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from starlette.concurrency import run_in_threadpool

from api.deps import Caller, OrchestratorDep
from shared.documents import DocumentInfo, decode_text
from shared.errors import InvalidRequest, TooLarge

router = APIRouter(tags=["documents"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
            },
        },
    }
}


@router.post(
    "/v1/documents",
    status_code=status.HTTP_201_CREATED,
    response_model=DocumentInfo,
    responses={413: {"description": "Too large"}, 415: {"description": "Not UTF-8 text"}},
    openapi_extra=_BODY,
)
async def upload_document(request: Request, orchestrator: OrchestratorDep, caller: Caller) -> DocumentInfo:
    """Store a document (raw text body, a multipart `file`, or JSON `{"text": ...}`); its id is its sha256."""
    text = await _document_from(request, orchestrator.settings.document_processing.max_document_bytes)
    return await run_in_threadpool(orchestrator.store_document, text, caller)


@router.get("/v1/documents/{document_id}", response_model=DocumentInfo)
def get_document(document_id: str, orchestrator: OrchestratorDep, caller: Caller) -> DocumentInfo:
    """The document's size in tokens, bytes and characters: 404 unless the caller's tenant stored it."""
    return orchestrator.document(document_id, caller)


async def _document_from(request: Request, limit: int) -> str:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 4096:
        raise TooLarge(f"document larger than the limit of {limit:,} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest("multipart upload needs a `file` field", "file")
        data, name = await upload.read(limit + 1), upload.filename or "file"
    elif kind == "application/json":
        try:
            payload = await request.json()
        except ValueError:
            raise InvalidRequest("body is not valid JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
            raise InvalidRequest('JSON body must be {"text": "..."}', "text")
        data, name = payload["text"].encode("utf-8"), "document"
    else:
        data, name = await request.body(), "document"
    if len(data) > limit:
        raise TooLarge(f"document larger than the limit of {limit:,} bytes")
    text = decode_text(data, name)
    if not text.strip():
        raise InvalidRequest("document is empty")
    return text
