"""Which services and tools a request is offered, from its intent and words; the registry's validation."""

import pytest

from shared.routing import analyze
from shared.services.config import McpService
from shared.services.models import ServiceTool, function_name
from shared.services.selection import select_services
from shared.settings import ConfigError, load_settings

GIT_TOOLS = [
    "git_status",
    "git_diff_unstaged",
    "git_diff_staged",
    "git_diff",
    "git_commit",
    "git_add",
    "git_reset",
    "git_log",
    "git_create_branch",
    "git_checkout",
    "git_show",
    "git_branch",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "repo_path": {"type": "string", "description": "Path to the repository"},
        "max_count": {"type": "integer"},
    },
    "required": ["repo_path"],
}

SERVICES = {
    "git": McpService(
        type="stdio",
        command=["mcp-server-git"],
        capabilities=["read", "search", "analyze", "write", "git", "commit", "repository"],
    ),
    "time": McpService(type="stdio", command="python -m mcp_server_time", capabilities=["read", "time", "timezone"]),
    "tickets": McpService(type="http", url="http://127.0.0.1:1/mcp", capabilities=["write", "manage", "ticket"]),
}
CATALOG = {
    "git": [
        ServiceTool(service="git", name=name, description=f"Runs {name}", input_schema=SCHEMA) for name in GIT_TOOLS
    ],
    "time": [
        ServiceTool(service="time", name=name, input_schema=SCHEMA) for name in ("get_current_time", "convert_time")
    ],
    "tickets": [
        ServiceTool(service="tickets", name=name, input_schema=SCHEMA)
        for name in ("create_ticket", "close_ticket", "list_tickets")
    ],
}


def select(request: str, settings_intent: str | None = None):
    intent = settings_intent or analyze(request, {}, None, load_settings()).intent
    return select_services(request, intent, SERVICES, CATALOG)


def test_a_request_that_names_no_service_is_offered_no_tools():
    selection = select("What is the capital of France?")
    assert selection.services == []
    assert selection.tools_offered == 0 and selection.schema_tokens_offered == 0
    assert selection.schema_tokens_all == sum(t.schema_tokens for tools in CATALOG.values() for t in tools)
    assert set(selection.skipped) == {"git", "time", "tickets"}


def test_a_read_of_the_git_history_gets_the_git_read_tools_only():
    selection = select("Show the last three commits in the git log of the repository", "read")
    assert [choice.service for choice in selection.services] == ["git"]
    offered = selection.offered("git")
    assert "git_log" in offered and "git_show" in offered and "git_status" in offered
    assert not {"git_commit", "git_add", "git_reset", "git_checkout", "git_create_branch"} & set(offered)
    assert selection.schema_tokens_offered < selection.schema_tokens_all / 2
    assert selection.schema_tokens_saved == selection.schema_tokens_all - selection.schema_tokens_offered


def test_a_write_request_also_gets_the_write_tools():
    offered = select("Commit the staged changes to the git repository", "write").offered("git")
    assert {"git_commit", "git_add", "git_log"} <= set(offered)


def test_plural_topic_words_and_several_services():
    selection = select("What time is it in Tokyo, and list the recent commits", "read")
    assert {choice.service for choice in selection.services} == {"git", "time"}


def test_a_service_whose_intents_cannot_serve_the_request_is_skipped_with_the_reason():
    selection = select("Search the ticket archive for outages", "search")
    assert selection.services == []
    assert "not a search request" in selection.skipped["tickets"]


def test_an_unavailable_service_is_reported_not_offered():
    catalog = {name: tools for name, tools in CATALOG.items() if name != "time"}
    selection = select_services("what time is it", "read", SERVICES, catalog, {"time": "command not found"})
    assert selection.services == []
    assert selection.skipped["time"] == "unavailable: command not found"


def test_function_names_are_unique_and_within_provider_rules():
    assert function_name("git", "git_log") == "git__git_log"
    assert function_name("my.files", "read file") == "my_files__read_file"
    assert len(function_name("s" * 40, "t" * 40)) == 64


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "stdio", "capabilities": ["read"]}, "mcp_services.git: command: required for a stdio service"),
        ({"type": "http", "capabilities": ["read"]}, "mcp_services.git: url: required for an http service"),
        ({"type": "stdio", "command": ["x"], "capabilities": []}, "mcp_services.git.capabilities"),
        ({"type": "pipe", "command": ["x"], "capabilities": ["read"]}, "mcp_services.git.type"),
    ],
)
def test_a_bad_registry_entry_names_the_service_and_the_field(entry, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(mcp_services={"git": entry})
