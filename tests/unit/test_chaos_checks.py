"""The chaos run's verdict on the topic: at least once is allowed, a loss or a reordering is not."""

from __future__ import annotations

from benchmarks.chaos import delivery_problems
from benchmarks.topic import Delivery

STORED = [("a", 1, "a1"), ("a", 2, "a2"), ("a", 3, "a3"), ("b", 1, "b1")]


def arrivals(*keys: tuple[str, int]) -> list[Delivery]:
    return [Delivery(p, s, f"{p}{s}", created_at=0.0, produced=0.0, arrived=0.0) for p, s in keys]


def test_every_event_once_in_order_is_no_problem() -> None:
    assert delivery_problems(STORED, arrivals(("a", 1), ("b", 1), ("a", 2), ("a", 3))) == []


def test_a_batch_published_again_after_a_failover_is_no_problem() -> None:
    # The new leader publishes again what the old one had published: a consumer skips it.
    assert (
        delivery_problems(STORED, arrivals(("a", 1), ("a", 2), ("b", 1), ("a", 2), ("a", 3), ("a", 3))) == []
    )


def test_a_lost_event_is_a_problem_and_so_is_the_gap_it_leaves() -> None:
    problems = delivery_problems(STORED, arrivals(("a", 1), ("a", 3), ("b", 1)))

    assert any(problem.startswith("1 events lost") and "('a', 2)" in problem for problem in problems)
    assert any(problem.startswith("1 events out of order") for problem in problems)


def test_an_event_overtaking_an_earlier_one_is_out_of_order() -> None:
    problems = delivery_problems(STORED, arrivals(("a", 2), ("a", 1), ("a", 3), ("b", 1)))

    assert problems == ["1 events out of order, e.g. ['a #2 after #0']"]


def test_an_event_never_stored_is_a_problem() -> None:
    deliveries = arrivals(("a", 1), ("a", 2), ("a", 3), ("b", 1))
    deliveries.append(Delivery("b", 1, "not-b1", created_at=0.0, produced=0.0, arrived=0.0))

    assert delivery_problems(STORED, deliveries) == ["1 events published but not stored, e.g. [('b', 1)]"]
