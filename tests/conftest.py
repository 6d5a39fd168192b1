"""Shared test fixtures."""

from __future__ import annotations

import pytest

try:  # one BLAS thread: dense LAPACK on a shared, loaded machine is otherwise erratic
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None


@pytest.fixture
def one_blas_thread():
    """Dense linear algebra (ours and QuTiP's) on one BLAS thread for the test."""
    if threadpool_limits is None:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


#: The heaviest default tests (whole functions, every parameter), measured with
#: ``--durations`` on the 2-core development machine: together about two thirds of
#: the default suite's time. They stay in the default run (README "Run the tests",
#: ``.ci/run``); ``pytest -m "not slow and not heavy"`` leaves them out for a fast
#: development loop.
HEAVY = frozenset({
    "test_readme_python_blocks_run",  # the README's examples, 20,000 trajectories among them
    "test_davidson_second_attempt_after_a_stall",
    "test_davidson_finds_the_pairs_it_used_to_miss",
    "test_davidson_matches_full_space",
    "test_davidson_matches_dense_at_n6",
    "test_sigkill_at_random_moments_then_resume_equals_uninterrupted",  # 12,000 trajectories
    "test_two_signals_50ms_apart_then_resume_equals_uninterrupted",
    "test_signal_mid_run_then_resume_equals_uninterrupted",
    "test_signals_during_the_final_write_wait_for_it",
    "test_ctrl_c_writes_a_checkpoint_and_exits_130",
    "test_dask_worker_killed_mid_run_gives_the_same_result",
    "test_dask_local_cluster_equals_joblib_bit_for_bit",
    "test_a_scheduler_that_does_not_answer_fails_fast_with_one_line",
    "test_local_dask_cluster_has_no_dashboard_and_no_port_warning",
    "test_cloning_agrees_with_the_exact_scgf_and_its_slope",
    "test_extrapolation_in_the_population_size",
    "test_chebyshev_mode_is_bit_identical_across_jobs_and_batches",
    "test_long_chain_single_impurity_chebyshev_mode_agrees_with_exact",  # the 201-site chain
    "test_steadystate_matches_qutip",
    "test_spectra_match_qutip",
    "test_reduced_spectrum_matches_the_direct_path",
    "test_chebyshev_head_leaves_the_stated_residual",
    "test_broken_pipe_ends_quietly",
    "test_what_can_change_a_number_changes_the_digest",
})


def pytest_collection_modifyitems(config, items):
    """Mark the :data:`HEAVY` tests ``heavy``."""
    for item in items:
        if getattr(item, "originalname", None) in HEAVY:
            item.add_marker(pytest.mark.heavy)
