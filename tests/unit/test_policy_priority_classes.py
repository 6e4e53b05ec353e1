import pytest

from serve_app.policy.priority_classes import PriorityClass, PriorityClasses, UnknownPriorityClass


def make_class(name: str, rank: int, ttft: float = 1.0, tpot: float = 0.05, deadline: float = 10.0) -> PriorityClass:
    return PriorityClass(name=name, rank=rank, ttft_slo_s=ttft, tpot_slo_s=tpot, queue_deadline_s=deadline)


def three_classes() -> PriorityClasses:
    # Deliberately unsorted input with non-contiguous ranks.
    return PriorityClasses(
        [
            make_class("batch", 7, ttft=30.0, tpot=0.2, deadline=600.0),
            make_class("interactive", 0, ttft=0.5, tpot=0.05, deadline=5.0),
            make_class("standard", 3, ttft=2.0, tpot=0.04, deadline=30.0),
        ]
    )


def test_by_rank_orders_highest_first_and_levels_are_contiguous():
    classes = three_classes()
    assert [c.name for c in classes.by_rank()] == ["interactive", "standard", "batch"]
    assert classes.names == ("interactive", "standard", "batch")
    assert [classes.level_of(n) for n in ("interactive", "standard", "batch")] == [0, 1, 2]
    assert len(classes) == 3
    assert [c.rank for c in classes] == [0, 3, 7]


@pytest.mark.parametrize("value, name", [(-5, "interactive"), (0, "interactive"), (1, "standard"), (2, "batch"),
                                         (3, "batch"), (7, "batch")])
def test_vllm_integer_priority_picks_the_class_at_that_level(value, name):
    assert three_classes().name_for_vllm_priority(value) == name  # by level, not by the configured rank


def test_get_returns_the_named_class():
    classes = three_classes()
    assert classes.get("standard").ttft_slo_s == 2.0
    assert "standard" in classes
    assert "premium" not in classes


def test_get_unknown_raises_value_error_listing_known_names():
    with pytest.raises(UnknownPriorityClass) as excinfo:
        three_classes().get("premium")
    assert isinstance(excinfo.value, ValueError)
    assert excinfo.value.name == "premium"
    assert excinfo.value.known == ("interactive", "standard", "batch")
    assert str(excinfo.value) == "unknown priority class 'premium'; known classes: interactive, standard, batch"


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="duplicate priority class names: a"):
        PriorityClasses([make_class("a", 0), make_class("a", 1)])


def test_duplicate_ranks_rejected():
    with pytest.raises(ValueError, match=r"duplicate priority class ranks: \[1\]"):
        PriorityClasses([make_class("a", 1), make_class("b", 1), make_class("c", 0)])


def test_empty_rejected():
    with pytest.raises(ValueError, match="at least one"):
        PriorityClasses([])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "rank": 0},
        {"name": "x", "rank": -1},
        {"name": "x", "rank": 0, "ttft": 0.0},
        {"name": "x", "rank": 0, "tpot": -0.1},
        {"name": "x", "rank": 0, "deadline": 0.0},
    ],
)
def test_invalid_class_fields_rejected(kwargs):
    with pytest.raises(ValueError):
        make_class(**kwargs)


def test_priority_class_is_frozen():
    cls = make_class("a", 0)
    with pytest.raises(AttributeError):
        cls.rank = 3  # type: ignore[misc]


def test_tightest_slos_over_active_classes():
    classes = three_classes()
    assert classes.tightest_ttft_slo(["batch", "standard"]) == 2.0
    assert classes.tightest_ttft_slo(["batch", "interactive", "standard"]) == 0.5
    # TPOT's tightest class differs from TTFT's: standard (0.04) beats interactive (0.05).
    assert classes.tightest_tpot_slo(["interactive", "standard"]) == 0.04
    assert classes.tightest_tpot_slo(["batch"]) == 0.2


def test_tightest_slo_of_nothing_active_is_none():
    classes = three_classes()
    assert classes.tightest_ttft_slo([]) is None
    assert classes.tightest_tpot_slo(iter(())) is None


def test_tightest_slo_with_unknown_active_name_raises():
    with pytest.raises(UnknownPriorityClass):
        three_classes().tightest_ttft_slo(["standard", "nope"])


@pytest.mark.parametrize(
    ("requested", "ceiling", "expected"),
    [
        ("interactive", "standard", "standard"),  # above the ceiling: clamped down
        ("interactive", "batch", "batch"),
        ("standard", "batch", "batch"),
        ("standard", "standard", "standard"),  # equal is allowed
        ("batch", "interactive", "batch"),  # asking for less than allowed is kept
        ("standard", "interactive", "standard"),
    ],
)
def test_clamp_to_ceiling(requested, ceiling, expected):
    assert three_classes().clamp_to_ceiling(requested, ceiling) == expected


def test_clamp_to_ceiling_unknown_names_raise():
    classes = three_classes()
    with pytest.raises(UnknownPriorityClass):
        classes.clamp_to_ceiling("vip", "standard")
    with pytest.raises(UnknownPriorityClass):
        classes.clamp_to_ceiling("standard", "vip")
