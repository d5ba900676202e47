"""Calls in flight bounded per account and per model across every worker (shared/slots.py), on the test Redis."""

from __future__ import annotations

import os
import threading
import time

import pytest

from shared import slots as slots_module
from shared.settings import load_settings
from shared.slots import CallSlots, NoSlot, WaitCancelled
from shared.store import redis_client
from tests.catalog import TEST_CONFIG_DIRS

LIMITS = """
providers:
  local: {adapter: openai, base_url: "http://127.0.0.1:9/v1", api_key_required: false, max_in_flight: 2}
models:
  small-a: {provider: local, tier: simple, context_window: 4096, max_in_flight: 1,
            price_override: {input_usd_per_mtok: 0, output_usd_per_mtok: 0}}
  small-b: {provider: local, tier: simple, context_window: 4096,
            price_override: {input_usd_per_mtok: 0, output_usd_per_mtok: 0}}
"""


@pytest.fixture
def slots(redis_env, tmp_path, monkeypatch):
    (tmp_path / "limits.yaml").write_text(LIMITS)
    monkeypatch.setenv("ORCH_CONFIG_DIR", os.pathsep.join([TEST_CONFIG_DIRS, str(tmp_path)]))
    monkeypatch.setenv("ORCH_RESILIENCE__SLOT_WAIT_SECONDS", "5")
    settings = load_settings()
    return CallSlots(settings, redis_client(settings))


def most_at_once(slots: CallSlots, models: list[str], hold_s: float = 0.1) -> int:
    """Run one call per entry of `models` at once, each holding its slots `hold_s`; the most that held at once."""
    lock, running, peak = threading.Lock(), [0], [0]

    def call(model: str) -> None:
        with slots.held("local", model, timeout_s=5):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(hold_s)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=call, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return peak[0]


def test_a_model_limit_of_one_runs_its_calls_one_at_a_time(slots):
    assert most_at_once(slots, ["small-a"] * 4) == 1


def test_the_account_limit_bounds_its_models_together(slots):
    assert most_at_once(slots, ["small-b"] * 6) == 2
    assert most_at_once(slots, ["small-a", "small-a", "small-b", "small-b"]) == 2


def test_an_unbounded_model_waits_for_nothing(slots):
    with slots.held("openai", "gpt-4.1-nano", timeout_s=5) as hold:
        assert hold.waited == 0.0 and slots.limits("openai", "gpt-4.1-nano") == {}


def test_the_slot_of_a_worker_that_died_holding_it_comes_back_when_its_lease_ends(slots, monkeypatch):
    monkeypatch.setattr(slots_module, "LEASE_MARGIN_S", 0.0)
    abandoned = slots.held("local", "small-a", timeout_s=0.5)
    abandoned.__enter__()  # never left: its holder is gone
    started = time.monotonic()
    with slots.held("local", "small-a", timeout_s=5) as hold:
        assert 0.3 < hold.waited < 2.0 and time.monotonic() - started < 2.0


def test_a_long_stream_renews_its_lease_and_keeps_its_slot(slots, monkeypatch):
    monkeypatch.setattr(slots_module, "LEASE_MARGIN_S", 0.0)
    monkeypatch.setattr(slots_module, "RENEW_EVERY_S", 0.1)
    monkeypatch.setattr(slots.settings.resilience, "slot_wait_seconds", 0.2)
    with slots.held("local", "small-a", timeout_s=0.5) as hold:
        for _ in range(8):  # 1.2 s of pieces, past the 0.5 s lease
            time.sleep(0.15)
            hold.renew()
        with pytest.raises(NoSlot):  # the slot is still held: no second call got in
            with slots.held("local", "small-a", timeout_s=5):
                pass


def test_a_call_that_waits_too_long_or_is_cancelled_gives_up(slots, monkeypatch):
    with slots.held("local", "small-a", timeout_s=5):
        monkeypatch.setattr(slots.settings.resilience, "slot_wait_seconds", 0.3)
        message = r"no slot free for small-a at local within 0 s \(provider 2, model 1 in flight\)"
        with pytest.raises(NoSlot, match=message):
            with slots.held("local", "small-a", timeout_s=5):
                pass
        with pytest.raises(WaitCancelled):
            with slots.held("local", "small-a", timeout_s=5, cancelled=lambda: True):
                pass
