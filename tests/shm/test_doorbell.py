from __future__ import annotations

import threading
import time

from csp_mp._shm import doorbell as doorbell_mod
from csp_mp._shm.arena import Arena
from csp_mp._shm.doorbell import Doorbell

from . import _workers


def test_ring_before_wait_is_not_lost(arena: Arena) -> None:
    bell = Doorbell.create(arena)
    bell.ring()
    bell.ring()
    assert bell.pending == 2
    assert bell.wait(0) and bell.wait(5)
    assert not bell.wait(0)
    t0 = time.monotonic()
    assert not bell.wait(0.05)
    assert time.monotonic() - t0 >= 0.04


def test_drain_takes_every_post(arena: Arena) -> None:
    bell = Doorbell.create(arena)
    for _ in range(5):
        bell.ring()
    assert bell.drain() == 5 and bell.pending == 0


def test_thread_rings_waiting_owner(arena: Arena) -> None:
    bell = Doorbell.create(arena)
    t = threading.Thread(target=bell.ring)
    t.start()
    assert bell.wait(10)
    t.join()


def test_spin_policy_is_replaceable(arena: Arena) -> None:
    bell = Doorbell.create(arena)
    calls = []
    doorbell_mod.set_spin_policy(lambda: calls.append(1) or True)
    try:
        assert not bell.wait(0.01)
    finally:
        doorbell_mod.set_spin_policy(doorbell_mod.spare_core)
    assert calls


def test_ping_pong_across_processes(arena: Arena, ctx) -> None:
    ping, pong = Doorbell.create(arena), Doorbell.create(arena)
    p = ctx.Process(target=_workers.ring_back, args=(ping, pong, 200))
    p.start()
    try:
        for _ in range(200):
            ping.ring()
            assert pong.wait(10)
    finally:
        p.join(20)
    assert p.exitcode == 0
