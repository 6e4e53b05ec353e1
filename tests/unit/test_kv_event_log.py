from serve_app.kv_event_log import KvEventLog
from serve_app.policy.prefix_cache_index import AllCleared, BlocksRemoved, BlocksStored


def _stored(n: int) -> BlocksStored:
    return BlocksStored([n], n - 1 if n else None, [n] * 4, 4)


def test_a_cursor_gets_exactly_what_came_after_it():
    log = KvEventLog(kept=10)
    log.append([_stored(0), _stored(1)])
    first = log.since(0)
    assert first.events == [_stored(0), _stored(1)] and first.next_seq == 2
    log.append([BlocksRemoved([0])])
    second = log.since(first.next_seq)
    assert second.events == [BlocksRemoved([0])] and second.next_seq == 3
    assert log.since(3).events == []


def test_a_cursor_the_log_no_longer_covers_starts_over_from_a_clear():
    log = KvEventLog(kept=3)
    log.append([_stored(n) for n in range(5)])  # 0 and 1 dropped
    page = log.since(1)
    assert page.events == [AllCleared(), _stored(2), _stored(3), _stored(4)]
    assert page.next_seq == 5
    # A new ingress (cursor 0) also learns that it missed the start.
    assert log.since(0).events[0] == AllCleared()


def test_a_cursor_from_a_previous_life_of_the_replica_starts_over():
    log = KvEventLog(kept=3)
    log.append([_stored(0)])
    assert log.since(40).events == [AllCleared(), _stored(0)]
