"""Batch items are known by their content, so a resumed batch skips what did not change and reruns what did."""

from __future__ import annotations

import json

from api.batch_cli import read_items


def keys(path) -> dict[str, str]:
    return {item.label: item.key for item in read_items(path, None)}


def test_a_line_is_known_by_its_body_not_its_place_or_spelling(tmp_path):
    source = tmp_path / "jobs.jsonl"
    source.write_text('{"request": "a", "context": {"x": 1}}\n{"request": "b"}\n')
    before = keys(source)
    source.write_text('{"request": "new"}\n\n{ "context":{"x":1},  "request":"a" }\n{"request": "b"}\n')
    after = keys(source)
    assert after["line 3"] == before["line 1"] and after["line 4"] == before["line 2"]
    assert after["line 1"] not in before.values()
    assert len(before["line 1"]) == 24 and int(before["line 1"], 16) >= 0


def test_an_edited_line_gets_a_new_key_and_the_others_keep_theirs(tmp_path):
    source = tmp_path / "jobs.jsonl"
    lines = [{"request": f"Define term number {i}"} for i in range(4)]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    before = keys(source)
    lines[2]["request"] = "Define term number two"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    after = keys(source)
    assert [label for label in before if before[label] != after[label]] == ["line 3"]


def test_identical_lines_are_told_apart_and_a_bad_line_is_known_by_its_text(tmp_path):
    source = tmp_path / "jobs.jsonl"
    source.write_text('{"request": "same"}\n{"request": "same"}\nnot json\n')
    items = read_items(source, None)
    assert items[1].key == f"{items[0].key}#2"
    assert items[2].value.startswith("not JSON") and items[2].line == 3
    bad = items[2].key
    source.write_text('{"request": "same"}\n{"request": "same"}\n{"request": "fixed"}\n')
    assert read_items(source, None)[2].key != bad


def test_a_folder_item_is_its_file_name_content_and_request(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Revenue grew.")
    (folder / "b.txt").write_text("Revenue grew.")
    first = {item.label: item.key for item in read_items(folder, "Summarize")}
    assert first["a.txt"] != first["b.txt"]  # same text, another file
    (folder / "b.txt").write_text("Costs fell.")
    second = {item.label: item.key for item in read_items(folder, "Summarize")}
    assert second["a.txt"] == first["a.txt"] and second["b.txt"] != first["b.txt"]
    assert {item.key for item in read_items(folder, "Translate")}.isdisjoint(second.values())
