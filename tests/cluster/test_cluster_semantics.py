"""The semantic suite's cross-P cases, run across two nodes.

Each case is the one-machine test itself, called with ``procs=2`` inside a cluster run
(``CSP_MP_CLUSTER``, and ``mp_helpers.ACROSS_NODES``): ``go_on`` then puts the partner
goroutines on the other node, so every value, wake-up and close crosses machines. Cases left
out assert what only one machine has: P numbers and pids, the compiled core's fast-path counts,
a shared channel's wait queues, or a waiter seen parked at a channel's home before the test goes
on (a select with a case on another node's channel tries its cases instead of parking there; a
goroutine waiting on another node's mutex shows as waiting for that node's reply).
"""

from __future__ import annotations

import pytest
import test_mp_chan as chan
import test_mp_sync as sync
from mp_helpers import ACROSS_NODES

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

#: run by make test-cluster: channels, close, select, a mutex, Once, a context, errgroup
CASES = [
    (chan.test_unbuffered_send_completes_only_when_received, {}),
    (chan.test_buffered_channel_fills_then_blocks_and_keeps_order, {}),
    (chan.test_a_timed_out_select_send_is_never_received, {}),
    (chan.test_close_wakes_every_waiter_in_every_p, {"cap": 0}),
    (chan.test_close_wakes_every_waiter_in_every_p, {"cap": 2}),
    (chan.test_close_and_send_errors_across_ps, {}),
    (chan.test_values_arrive_equal_and_of_the_same_type, {}),
    (chan.test_typed_channel_validates_and_decodes_across_ps, {}),
    (chan.test_select_takes_exactly_one_of_two_ready_remote_senders, {}),
    (sync.test_mutex_excludes_across_ps, {}),
    (sync.test_once_runs_once_across_every_p, {}),
    (sync.test_cancel_in_another_p_closes_done_in_p0, {}),
    (sync.test_errgroup_collects_goroutines_of_every_p, {}),
]

#: the other cases that hold across nodes (marked slow: ~4 s each)
MORE_CASES = [
    (chan.test_receiver_on_another_p_gets_values_in_order, {}),
    (chan.test_len_and_cap_agree_in_every_p, {}),
    (chan.test_buffered_values_survive_promotion, {}),
    (chan.test_recv_ok_drains_then_reports_closed, {}),
    (chan.test_recv_on_closed_drained_channel_returns_none_at_once, {}),
    (chan.test_for_loop_ends_when_a_remote_sender_closes, {}),
    (chan.test_numpy_arrays_and_large_bytes_cross_intact, {"cap": 0}),
    (chan.test_numpy_arrays_and_large_bytes_cross_intact, {"cap": 3}),
    (chan.test_typed_int_channel_keeps_ints, {}),
    (chan.test_typed_list_of_float_channel, {}),
    (chan.test_typed_channel_checks_nested_struct_fields, {}),
    (chan.test_select_default_on_shared_channels, {}),
    (chan.test_select_timeout_on_a_remote_channel, {}),
    (chan.test_remote_select_with_timeout, {}),
    (chan.test_timer_channels_made_in_p0_deliver_in_another_p, {}),
    (chan.test_sleep_in_another_p_parks_only_its_goroutine, {}),
    (sync.test_waitgroup_go_runs_on_any_p, {}),
    (sync.test_waitgroup_negative_counter_in_a_remote_p, {}),
    (sync.test_mutex_held_remotely_try_lock_and_unlock_errors, {}),
    (sync.test_rwmutex_readers_share_writers_exclude_across_ps, {}),
    (sync.test_once_that_raises_still_counts_as_done, {}),
    (sync.test_compare_and_swap_has_one_winner_across_ps, {}),
    (sync.test_int64_and_bool_operations_seen_by_another_p, {}),
    (sync.test_cancel_in_another_p_reaches_children_made_in_p0, {}),
    (sync.test_timeout_and_values_seen_in_another_p, {}),
    (sync.test_errgroup_limit_holds_across_ps, {}),
]


def _case_id(case: tuple) -> str:
    fn, params = case
    return fn.__name__.removeprefix("test_") + "".join(f"-{v}" for v in params.values())


def _run_case(address: str, monkeypatch: pytest.MonkeyPatch, case: tuple) -> None:
    fn, params = case
    monkeypatch.setenv("CSP_MP_CLUSTER", address)
    monkeypatch.setenv(ACROSS_NODES, "1")
    fn(procs=2, **params)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_a_cross_p_case_holds_across_nodes(cluster, monkeypatch: pytest.MonkeyPatch,
                                           case: tuple) -> None:
    _run_case(cluster.address, monkeypatch, case)


@pytest.mark.slow
@pytest.mark.parametrize("case", MORE_CASES, ids=[_case_id(c) for c in MORE_CASES])
def test_more_cross_p_cases_hold_across_nodes(cluster, monkeypatch: pytest.MonkeyPatch,
                                              case: tuple) -> None:
    _run_case(cluster.address, monkeypatch, case)
