from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from inference.budget import (
    GPUMemoryBudget,
    _host_available_bytes,
    default_budget_bytes,
    estimate_batch_bytes,
    max_batch_that_fits,
)
from inference.errors import BudgetTimeoutError, InferenceError

JOIN_TIMEOUT = 20.0


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a thread deadlocked"


def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate()`` until it is true; the deadline only guards against a hang."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def start_reserving(
    budget: GPUMemoryBudget, nbytes: int, label: str, granted: list[str], hold: threading.Event
) -> threading.Thread:
    """Reserve ``nbytes`` in a thread, record ``label`` once granted, hold until ``hold``."""

    def body() -> None:
        with budget.reserve(nbytes, label=label):
            granted.append(label)
            hold.wait(JOIN_TIMEOUT)

    thread = threading.Thread(target=body, name=label, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("fair", [True, False])
def test_it_never_lets_concurrent_reservations_exceed_the_total(fair: bool) -> None:
    total = 1000
    budget = GPUMemoryBudget(total_bytes=total, fair=fair)
    counter_lock = threading.Lock()
    in_use = [0]
    most = [0]
    errors: list[BaseException] = []
    rounds = 100

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(rounds):
                nbytes = rng.randint(1, total // 3)
                with budget.reserve(nbytes, label=f"worker-{seed % 4}"):
                    # An independent tally of what is held right now.
                    with counter_lock:
                        in_use[0] += nbytes
                        most[0] = max(most[0], in_use[0])
                    time.sleep(rng.random() * 0.001)
                    with counter_lock:
                        in_use[0] -= nbytes
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,), daemon=True) for seed in range(32)]
    for thread in threads:
        thread.start()
    join_all(threads)

    assert errors == []
    assert 0 < most[0] <= total
    usage = budget.usage()
    assert (usage.reserved, usage.available, usage.waiting) == (0, total, 0)
    assert usage.active == {} and usage.active_count == 0
    assert usage.granted == 32 * rounds
    assert most[0] <= usage.peak <= total


def test_it_grants_a_large_request_queued_first_before_later_small_ones() -> None:
    budget = GPUMemoryBudget(total_bytes=100, fair=True)
    first = budget.acquire(60, label="first")
    granted: list[str] = []
    hold = threading.Event()
    threads = [start_reserving(budget, 80, "large", granted, hold)]
    wait_until(lambda: budget.usage().waiting == 1)
    for i in range(5):  # queue the small ones in a known order
        threads.append(start_reserving(budget, 10, f"small-{i}", granted, hold))
        wait_until(lambda: budget.usage().waiting == 2 + i or bool(granted))

    # 40 bytes are free and each small request fits, but the large one is ahead of them.
    usage = budget.usage()
    assert (usage.reserved, usage.granted) == (60, 1)
    assert granted == []

    first.release()
    wait_until(lambda: budget.usage().reserved == 100)
    usage = budget.usage()
    assert usage.active == {"large": 80, "small-0": 10, "small-1": 10}
    assert usage.waiting == 3
    hold.set()
    join_all(threads)
    assert sorted(granted) == ["large", *(f"small-{i}" for i in range(5))]
    assert budget.usage().reserved == 0


def test_it_lets_small_requests_overtake_when_not_fair() -> None:
    budget = GPUMemoryBudget(total_bytes=100, fair=False)
    first = budget.acquire(60, label="first")
    granted: list[str] = []
    hold = threading.Event()
    large = start_reserving(budget, 80, "large", granted, hold)
    wait_until(lambda: budget.usage().waiting == 1)

    smalls = [start_reserving(budget, 10, f"small-{i}", granted, hold) for i in range(4)]
    wait_until(lambda: len(granted) == 4)

    assert "large" not in granted
    assert budget.usage().reserved == 100
    hold.set()
    first.release()
    join_all([large, *smalls])
    assert budget.usage().reserved == 0


def test_it_raises_a_timeout_naming_the_requested_and_available_bytes() -> None:
    budget = GPUMemoryBudget(total_bytes=100)
    with budget.reserve(70, label="holder"):
        with pytest.raises(BudgetTimeoutError) as caught:
            with budget.reserve(50, timeout=0.05, label="session/7"):
                pytest.fail("the reservation should not have been granted")

    message = str(caught.value)
    assert "50 bytes" in message
    assert "30 bytes" in message
    assert "100 bytes" in message
    assert "session/7" in message
    assert caught.value.permanent is False
    usage = budget.usage()
    assert (usage.timeouts, usage.waiting, usage.reserved, usage.granted) == (1, 0, 0, 1)


def test_it_unblocks_the_queue_when_its_head_times_out() -> None:
    budget = GPUMemoryBudget(total_bytes=100, fair=True)
    holder = budget.acquire(70, label="holder")
    outcomes: list[str] = []

    def head() -> None:
        try:
            with budget.reserve(50, timeout=0.5, label="head"):
                outcomes.append("head granted")
        except BudgetTimeoutError:
            outcomes.append("head timed out")

    head_thread = threading.Thread(target=head, daemon=True)
    head_thread.start()
    wait_until(lambda: budget.usage().waiting == 1)
    granted: list[str] = []
    hold = threading.Event()
    hold.set()
    small = start_reserving(budget, 20, "small", granted, hold)  # fits, but queued behind "head"
    wait_until(lambda: budget.usage().waiting == 2 or bool(outcomes))

    join_all([head_thread, small])

    assert outcomes == ["head timed out"]
    assert granted == ["small"]
    holder.release()
    assert budget.usage().reserved == 0


def test_it_releases_the_reservation_when_the_block_raises() -> None:
    budget = GPUMemoryBudget(total_bytes=100)

    with pytest.raises(RuntimeError, match="decoder failed"):
        with budget.reserve(60, label="job/1"):
            assert budget.usage().reserved == 60
            raise RuntimeError("decoder failed")

    usage = budget.usage()
    assert (usage.reserved, usage.active) == (0, {})
    with budget.reserve(100):  # the whole budget is free again
        pass


def test_it_rejects_a_request_larger_than_the_whole_budget() -> None:
    budget = GPUMemoryBudget(total_bytes=100)

    with pytest.raises(ValueError, match=r"cannot reserve 101 bytes .* budget is 100 bytes"):
        with budget.reserve(101, label="job/1"):
            pass
    with pytest.raises(ValueError, match="negative"):
        budget.acquire(-1)

    assert budget.usage().waiting == 0


def test_it_reports_usage_by_label_and_the_peak() -> None:
    budget = GPUMemoryBudget(total_bytes=1000)
    a = budget.acquire(100, label="session/1")
    b = budget.acquire(200, label="session/1")
    c = budget.acquire(300, label="job/2")

    usage = budget.usage()
    assert usage.active == {"session/1": 300, "job/2": 300}
    assert (usage.reserved, usage.available, usage.active_count) == (600, 400, 3)

    for reservation in (a, b, c):
        reservation.release()
    c.release()  # releasing twice is harmless
    usage = budget.usage()
    assert (usage.reserved, usage.peak, usage.granted) == (0, 600, 3)


def test_it_estimates_more_memory_for_bigger_batches_and_wider_dtypes() -> None:
    def estimate(batch_size: int, dtype_bytes: int = 2, profile: str = "musetalk-v15") -> int:
        return estimate_batch_bytes(batch_size=batch_size, dtype_bytes=dtype_bytes, profile=profile)

    sizes = [estimate(b) for b in (1, 2, 4, 8, 20)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    assert estimate(8, dtype_bytes=4) == pytest.approx(2 * estimate(8), abs=1)
    assert estimate(8, profile="random-full") == estimate(8)
    assert estimate(8, profile="random-tiny") < estimate(8)
    prepare = estimate_batch_bytes(
        batch_size=8, dtype_bytes=2, profile="musetalk-v15", stage="prepare"
    )
    assert prepare != estimate(8)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0, "dtype_bytes": 2, "profile": "musetalk-v15"},
        {"batch_size": 1, "dtype_bytes": 3, "profile": "musetalk-v15"},
        {"batch_size": 1, "dtype_bytes": 2, "profile": "musetalk-v2"},
        {"batch_size": 1, "dtype_bytes": 2, "profile": "musetalk-v15", "stage": "train"},
    ],
)
def test_it_rejects_bad_estimate_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        estimate_batch_bytes(**kwargs)  # type: ignore[arg-type]


def test_it_finds_the_largest_batch_that_fits() -> None:
    def estimate(batch_size: int) -> int:
        return estimate_batch_bytes(batch_size=batch_size, dtype_bytes=2, profile="musetalk-v15")

    available = estimate(6) + 1
    assert (
        max_batch_that_fits(available_bytes=available, dtype_bytes=2, profile="musetalk-v15") == 6
    )
    assert (
        max_batch_that_fits(available_bytes=estimate(1) - 1, dtype_bytes=2, profile="musetalk-v15")
        == 0
    )
    assert (
        max_batch_that_fits(
            available_bytes=estimate(40), dtype_bytes=2, profile="musetalk-v15", limit=20
        )
        == 20
    )


def test_it_budgets_a_fraction_of_available_host_memory_on_cpu() -> None:
    total_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])

    budget = default_budget_bytes("cpu", fraction=0.5)

    assert 0 < budget <= total_kib * 1024 * 0.5


def test_it_reads_mem_available_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       2048 kB\nMemFree:  100 kB\nMemAvailable:   1024 kB\n")

    assert _host_available_bytes(meminfo) == 1024 * 1024


@pytest.mark.parametrize(
    ("device", "fraction"), [("cpu", 0.0), ("cpu", 1.5), ("mps", 0.8), ("cudax", 0.8)]
)
def test_it_rejects_bad_budget_arguments(device: str, fraction: float) -> None:
    with pytest.raises(ValueError):
        default_budget_bytes(device, fraction)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_it_says_when_cuda_is_requested_but_missing() -> None:
    with pytest.raises(InferenceError, match="CUDA is not available"):
        default_budget_bytes("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_it_budgets_a_fraction_of_free_cuda_memory() -> None:
    free, _total = torch.cuda.mem_get_info()

    budget = default_budget_bytes("cuda:0", fraction=0.5)

    assert 0 < budget <= free
