"""The packed form of a finished record: what it leaves out, and records packed by an earlier release stay readable."""

from __future__ import annotations

import json

import pytest

from shared.jobs import JobInput, JobRecord, JobStatus
from shared.planning import Planner
from shared.record_codec import pack, unpack
from shared.requests import JobRequest
from shared.settings import load_settings

#: A record packed with dictionary 1 when it shipped; a dictionary never changes, so this reads the same forever.
PACKED_WITH_DICTIONARY_1 = "AYNWUaZpBsmGScaplonmKSbJRqkWSWaJhmkGKcbJpqnmiZZJ5FVR8CTllJ+XlV8KanegOqUWAA=="


def finished(request: str) -> JobRecord:
    proposal = Planner(load_settings()).propose(JobRequest(request=request))
    return JobRecord(
        id="0" * 32,
        status=JobStatus.succeeded,
        queue="llm.simple",
        created_at=1.5,
        finished_at=2.5,
        deliveries=3,
        input=JobInput(request=request),
        result="an answer",
        **proposal.model_dump(),
    )


def test_a_packed_record_leaves_out_its_live_fields_what_analysis_recomputes_and_defaults():
    record = finished("Write a Python function that merges two sorted lists")
    members = json.loads("{" + unpack(pack(record)) + "}")
    assert "status" not in members and "deliveries" not in members  # kept as hash fields of their own
    assert "features" not in members["analysis"] and "intent_scores" not in members["analysis"]
    assert "thresholds" not in members["analysis"]["decision"] and "rejected" not in members["plan"]
    assert "error" not in members and "attempts" not in members  # at their defaults
    assert members["analysis"]["skill"] == record.analysis.skill == "code"
    assert members["plan"]["model"] == record.plan.model and members["finished_at"] == 2.5


def test_the_packed_form_is_a_fraction_of_the_record():
    record = finished("Translate 'the road to Lyon' into French")
    assert len(pack(record)) < len(record.model_dump_json()) / 3


def test_a_record_packed_by_an_earlier_release_reads_the_same():
    assert json.loads("{" + unpack(PACKED_WITH_DICTIONARY_1) + "}") == {
        "id": "5f0c1b3e9a7d4c2e8b6a1f0d3c5e7a9b",
        "progress": 1.0,
        "stage": "done",
        "queue": "llm.simple",
        "result": "Bonjour",
        "tenant": "team",
    }


def test_a_dictionary_this_release_does_not_know_is_refused():
    with pytest.raises(KeyError):
        unpack("Ag" + PACKED_WITH_DICTIONARY_1[2:])
