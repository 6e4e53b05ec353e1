from serve_app.policy.window_leases import capacity_shares, share_windows


def test_one_ingress_gets_every_replica_whole_window():
    assert share_windows({"r1": 40, "r2": 10}, {"a": [0, 0, 0]}) == {"a": {"r1": 40, "r2": 10}}


def test_idle_ingress_replicas_split_equally():
    assert share_windows({"r1": 40}, {"a": [0, 0], "b": [0, 0]}) == {"a": {"r1": 20}, "b": {"r1": 20}}


def test_top_class_demand_is_met_before_any_lower_class_wherever_it_waits():
    # a holds 30 low requests, b 20 high ones: b's high class is served in full first.
    shares = capacity_shares(40, {"a": [0, 30], "b": [20, 0]})
    assert shares == {"a": 20.0, "b": 20.0}
    leases = share_windows({"r1": 20, "r2": 20}, {"a": [0, 100], "b": [30, 0]})
    assert leases["b"] == {"r1": 15, "r2": 15}
    assert leases["a"] == {"r1": 5, "r2": 5}


def test_a_class_that_does_not_fit_is_split_in_proportion_to_demand():
    shares = capacity_shares(30, {"a": [30, 5], "b": [10, 0], "c": [0, 0]})
    assert shares["a"] == 22.5 and shares["b"] == 7.5 and shares["c"] == 0


def test_every_ingress_keeps_at_least_one_slot_per_replica():
    leases = share_windows({"r1": 8}, {"a": [100], "b": [0]})
    assert leases["b"] == {"r1": 1}
    assert leases["a"] == {"r1": 8}


def test_leftover_capacity_beyond_demand_is_shared_equally():
    shares = capacity_shares(100, {"a": [10, 0], "b": [0, 10]})
    assert shares == {"a": 50.0, "b": 50.0}


def test_leases_never_sum_far_above_the_cap():
    caps = {"r1": 37, "r2": 5}
    demands = {"a": [3, 7, 11], "b": [1, 0, 40], "c": [0, 2, 0]}
    leases = share_windows(caps, demands)
    for replica, cap in caps.items():
        assert sum(lease[replica] for lease in leases.values()) <= cap + len(demands)


def test_no_ingress_no_leases_and_no_replica_empty_leases():
    assert share_windows({"r1": 4}, {}) == {}
    assert share_windows({}, {"a": [1], "b": [0]}) == {"a": {}, "b": {}}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_controller_leases_follow_each_ingress_replicas_demand_and_forget_silent_ones():
    import asyncio

    from serve_app.deployments.controller import INGRESS_STALE_S, RELEARN_S, Controller

    clock = _Clock()
    controller = Controller({}, clock=clock)
    asyncio.run(controller.report_allocation("r1", num_blocks=100, block_size=16, max_num_seqs=40))
    clock.now = RELEARN_S + 1
    asyncio.run(controller.report_load("r1", [], 0))
    lease = lambda ingress, demand: asyncio.run(controller.lease_windows(ingress, demand, {}, {}))  # noqa: E731
    assert lease("a", [0, 0, 0]) == {"r1": 40}  # alone: the whole window
    assert lease("b", [30, 0, 0]) == {"r1": 35}  # b's top-class demand first, the rest split equally
    assert lease("a", [0, 0, 50]) == {"r1": 10}
    clock.now += INGRESS_STALE_S + 1
    assert lease("a", [0, 0, 50]) == {"r1": 40}  # b went silent: a has it all again
