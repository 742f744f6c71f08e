"""Shared pytest setup: the ``slow`` marker for the fast subset, and the fixtures several test files use.

``pytest -m "not slow"`` (under 3 minutes on 2 cores) leaves out the tests named below; CI runs everything
(``pytest``). A test belongs here when it takes more than ~5 s on its own on a shared 2-core machine (measured with
``--durations``): training to convergence, multi-process training, kill/resume subprocesses, the 10,000-tree report.
"""

from __future__ import annotations

import pytest

# test node ids (file::name, a parametrized test without its [id] covers every case) that are slow
SLOW = (
    "tests/test_train_grpo.py::test_grpo_raises_the_mean_reward_on_a_learnable_toy_task",  # ~390 s measured, shared CPU
    "tests/test_train_grpo.py::test_kl_reference_and_several_iterations_per_batch",  # ~21 s
    # needs the module's 120-step SFT `warm` fixture: ~19 s alone, 72 s measured under load
    "tests/test_train_grpo.py::test_rollout_is_turn_shaped_observations_are_never_trained",
    "tests/test_train_sft.py::test_loss_falls_and_the_final_checkpoint_reloads",  # ~41 s
    "tests/test_train_sft.py::test_two_processes_equal_one_process",  # ~22 s (ddp), ~18 s (fsdp)
    "tests/test_train_sft.py::test_resume_reproduces_the_uninterrupted_run",  # ~13 s
    "tests/test_train_sft.py::test_vision_tower_frozen_by_default",  # ~6 s
    "tests/test_train_sft.py::test_lora_checkpoint_is_merged_and_matches_the_adapter_model",  # ~6 s
    "tests/test_train_multiturn.py::test_generate_export_sft_grpo_multiturn_from_the_cli",  # ~6 s
    "tests/test_train_e2e.py::test_generate_export_sft_grpo_from_the_cli",  # ~5 s
    "tests/test_generate_e2e.py::test_kill_mid_run_then_resume_loses_and_duplicates_nothing",  # ~5 s, a subprocess
    "tests/test_report_scale.py::test_ten_thousand_trees_make_a_small_page_of_data_not_markup",  # ~12 s
)


def is_slow(nodeid: str) -> bool:
    """Whether a collected test's node id is one of :data:`SLOW` (parametrized cases included)."""
    base = nodeid.split("[", 1)[0]
    return any(base == s or base.endswith("/" + s) or base == s.split("/", 1)[-1] for s in SLOW)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if is_slow(item.nodeid):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tiny local Qwen2.5-VL (``mcts_engine.testing.tiny_model``), built once per test module."""
    from mcts_engine.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))
