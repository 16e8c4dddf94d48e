"""A simulated Ray cluster for the cluster tests: one per test module, shut down after it.

``ray.cluster_utils.Cluster`` runs every node as its own raylet on this machine (2 nodes of one
CPU; a third is added by the tests that lose one). Ray's processes are the cluster's, not the
tests': the leak check here looks for what csp_mp starts instead, the processes whose
environment carries a run's marker, and for /dev/shm entries.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray", reason="the cluster tests need Ray: pip install 'csp_mp[ray]'")
from cluster_helpers import wait_no_marked  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import csp_mp  # noqa: E402

SHM = "/dev/shm"


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A 2-node cluster (head and one node, one CPU each, or the module's ``CLUSTER_CPUS``),
    one per test module: shut down before the rest of the suite runs, whose leak checks would
    see Ray's processes come and go."""
    cpus = getattr(request.module, "CLUSTER_CPUS", 1)
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED")}
    os.environ["RAY_TMPDIR"] = tmp
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": cpus, "object_store_memory": 80 << 20, "include_dashboard": False,
            "temp_dir": os.path.join(tmp, "ray"),
            # a node the loss tests remove is dead to Ray within ~2 s, not ~15 s, so the next
            # run's placement group does not wait for it (csp_mp does not rely on this)
            "_system_config": {"health_check_period_ms": 500,
                               "health_check_failure_threshold": 3,
                               "health_check_timeout_ms": 1000,
                               "health_check_initial_delay_ms": 1000}})
        c.add_node(num_cpus=cpus, object_store_memory=80 << 20)
        c.wait_for_nodes()
        c.csp_cpus = cpus  # type: ignore[attr-defined]
        yield c
    finally:
        if c is not None:
            c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def third_node(cluster):
    """A third node for one test, removed (as if lost) after it."""
    node = cluster.add_node(num_cpus=getattr(cluster, "csp_cpus", 1),
                            object_store_memory=80 << 20)
    cluster.wait_for_nodes()
    try:
        yield node
    finally:
        if node in cluster.list_all_nodes():
            cluster.remove_node(node, allow_graceful=False)
        cluster.wait_for_nodes()  # Ray sees it gone: the next run places no bundle there


@pytest.fixture(autouse=True)
def _nothing_outlives_the_test() -> Iterator[None]:
    """Replaces the suite's check here: no process of a cluster run and no /dev/shm entry of
    ours outlives a test, and no runtime is left installed."""
    shm_before = set(os.listdir(SHM)) if os.path.isdir(SHM) else set()
    try:
        yield
    finally:
        csp_mp.shutdown()
    from csp_mp import _hub

    leaked = _hub.peek()
    if leaked is not None:
        _hub.set_current(None)
    assert leaked is None, "a csp_mp runtime is still installed after the test"
    left = wait_no_marked()
    assert not left, f"processes of a cluster run left behind: {left}"
    if os.path.isdir(SHM):
        pid = f"-{os.getpid()}-"
        new = {e for e in set(os.listdir(SHM)) - shm_before if pid in e}
        assert not new, f"/dev/shm entries left behind: {sorted(new)}"
