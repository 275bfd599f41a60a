"""The stack control: starts/repairs the embedded stack unless another platform is targeted."""

from __future__ import annotations

import os
import time

import pytest
from chaoslib.exceptions import InterruptExecution

from chaosmessaging.controls import stack as stack_control
from chaosmessaging.stack.state import load_state


@pytest.fixture(autouse=True)
def _embedded_target(monkeypatch):
    """The control only brings the stack up when no external API is configured."""
    monkeypatch.delenv("CHAOSMESSAGING_API_URL", raising=False)


def test_a_dead_stack_process_is_restarted_before_the_experiment(one_service_stack):
    home = one_service_stack
    old = load_state(home).service("consumer")
    os.killpg(old.pid, 9)
    for _ in range(100):
        if not old.alive():
            break
        time.sleep(0.05)

    stack_control.before_experiment_control({}, configuration={"chaosmessaging_home": str(home)})

    new = load_state(home).service("consumer")
    assert new.alive() and new.pid != old.pid


def test_external_target_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAOSMESSAGING_API_URL", raising=False)
    home = tmp_path / "home"
    stack_control.before_experiment_control(
        {},
        configuration={"chaosmessaging_home": str(home), "messaging_api_url": "http://127.0.0.1:9"},
    )
    assert not home.exists()
    monkeypatch.setenv("CHAOSMESSAGING_API_URL", "http://127.0.0.1:9")
    stack_control.before_experiment_control({}, configuration={"chaosmessaging_home": str(home)})
    assert not home.exists()


def test_a_stack_that_cannot_start_interrupts_the_run_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAOSMESSAGING_API_URL", raising=False)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(
        InterruptExecution, match="could not start the embedded stack .*chaosmessaging stack up"
    ):
        stack_control.before_experiment_control(
            {}, configuration={"chaosmessaging_home": str(not_a_dir)}
        )
