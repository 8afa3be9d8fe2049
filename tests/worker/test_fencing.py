"""worker.fencing.Lease: at most one commit per job, and only by the execution that holds the lease."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import protocol
from worker.fencing import Lease
from worker.protocol import JobState, Outcome

JOB = "f" * 32


def success(execution: str, payload: bytes) -> Outcome:
    return Outcome(JobState.SUCCEEDED, execution=execution, attempts=1,
                   result={"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "metadata": {}})


def acquire(connection, lease: Lease) -> int:
    with connection.pipeline() as pipe:
        lease.acquire_in(pipe)
        return pipe.execute()[0]


class TestLease:
    def test_acquire_is_exclusive_until_the_lease_is_gone(self, redis_conn):
        a, b = Lease(redis_conn, JOB, "a", 30), Lease(redis_conn, JOB, "b", 30)
        assert acquire(redis_conn, a) == 1
        assert acquire(redis_conn, b) == 0
        redis_conn.delete(a.key)  # expiry
        assert acquire(redis_conn, b) == 1
        assert a.renew() is False and b.renew() is True

    def test_a_stale_execution_cannot_publish(self, redis_conn):
        a, b = Lease(redis_conn, JOB, "a", 30), Lease(redis_conn, JOB, "b", 30)
        acquire(redis_conn, a)
        redis_conn.delete(a.key)
        acquire(redis_conn, b)
        assert a.commit(success("a", b"AAAA"), 60, bitstream=b"AAAA") is False
        assert redis_conn.get(protocol.bitstream_key(JOB)) is None
        assert b.commit(success("b", b"BB"), 60, bitstream=b"BB") is True
        record = Outcome.from_json(redis_conn.get(protocol.outcome_key(JOB)))
        assert record.execution == "b"
        assert record.result["sha256"] == hashlib.sha256(redis_conn.get(protocol.bitstream_key(JOB))).hexdigest()

    def test_a_job_with_an_outcome_cannot_be_taken_again(self, redis_conn):
        a = Lease(redis_conn, JOB, "a", 30)
        acquire(redis_conn, a)
        assert a.commit(success("a", b"x"), 60, bitstream=b"x")
        assert acquire(redis_conn, Lease(redis_conn, JOB, "b", 30)) == -1

    def test_commit_deletes_the_upload_and_the_lease(self, redis_conn):
        redis_conn.set(protocol.upload_key(JOB), b"png")
        a = Lease(redis_conn, JOB, "a", 30)
        acquire(redis_conn, a)
        assert a.commit(Outcome.failed("invalid-image", "no"), 60)
        assert not redis_conn.exists(protocol.upload_key(JOB), protocol.lease_key(JOB))
        assert a.renew() is True  # released: nothing left to renew, and no alarm raised

    def test_lease_expiry_is_redis_time(self, redis_conn):
        a = Lease(redis_conn, JOB, "a", 1.5)
        acquire(redis_conn, a)
        assert 0 < redis_conn.pttl(a.key) <= 1500


EXECUTIONS = ["e0", "e1", "e2"]
steps = st.lists(st.tuples(st.sampled_from(["acquire", "expire", "commit", "renew"]), st.sampled_from(EXECUTIONS)),
                 min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_any_interleaving_publishes_at_most_once_and_only_from_the_holder(redis_conn, plan):
    """Acquire, expiry, renewal and commit by three executions in any order, against a model."""
    redis_conn.delete(*(f(JOB) for f in (protocol.lease_key, protocol.outcome_key, protocol.bitstream_key)))
    leases = {e: Lease(redis_conn, JOB, e, 30) for e in EXECUTIONS}
    holder, committed = None, []
    for action, e in plan:
        lease = leases[e]
        if action == "acquire":
            got = acquire(redis_conn, lease)
            expected = -1 if committed else (1 if holder is None else 0)
            assert got == expected
            if got == 1:
                holder = e
        elif action == "expire":
            redis_conn.delete(protocol.lease_key(JOB))
            holder = None
        elif action == "renew":
            lease.released = False  # ask Redis, whatever this object did before
            assert lease.renew() == (holder == e)
        else:
            payload = e.encode() * 3
            lease.released = False
            ok = lease.commit(success(e, payload), 60, bitstream=payload)
            assert ok == (holder == e and not committed)
            if ok:
                committed.append(e)
                holder = None
    assert len(committed) <= 1
    record = redis_conn.get(protocol.outcome_key(JOB))
    assert (record is not None) == bool(committed)
    if committed:
        assert Outcome.from_json(record).execution == committed[0]
        assert redis_conn.get(protocol.bitstream_key(JOB)) == committed[0].encode() * 3


@pytest.mark.parametrize("state", list(JobState))
def test_outcome_round_trips_through_json(state):
    outcome = Outcome(state, execution="x", attempts=2, error={"type": "t", "detail": "d"})
    assert Outcome.from_json(outcome.to_json()) == outcome
