"""The benchmark suite (benchmarks/): a smoke run on a tiny budget, and its pieces.

The suite lives in the repository, not in the installed package: these tests import it
from the ``benchmarks`` directory beside ``tests``, and are skipped where the suite was
copied without it.
"""

import contextlib
import gc
import hashlib
import io
import json
import math
import re
import statistics
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if not (ROOT / "benchmarks" / "harness.py").is_file():
    pytest.skip(
        "benchmarks/ is not beside tests/ (suite copied elsewhere)", allow_module_level=True
    )
# Appended, so that the fastcnn under test (installed, or first on the path) stays first.
sys.path.append(str(ROOT))

from benchmarks import cases, fresh, harness, lenet, loops, plot, report, run, targets  # noqa: E402

LATEST_JSON = ROOT / "benchmarks" / "results" / "latest.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Cheap cases that still cover every code path: conv, both pools, the LeNet-5 step and
# inference (with the PyTorch and textbook-loops twins), the extrapolated epoch, the memory
# worker in a fresh interpreter, and the import timing.
SMOKE_CASES = (
    "conv_digits,maxpool_64x6x28,avgpool_64x6x28,lenet5_train,lenet5_infer,lenet5_epoch,"
    "lenet5_memory,import"
)
IMPLS_OF_TABLE = {"fastcnn", "numpy", "loops", "torch"}


@pytest.fixture(autouse=True, scope="module")
def default_thread_count():
    """Give the next test module fastcnn's default thread count back: the suite saves and
    restores counts through the public API, which leaves the default as an explicit count."""
    yield
    fastcnn.set_num_threads(None)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One quick run shared by the tests below: (exit status, stdout, output directory)."""
    out = tmp_path_factory.mktemp("bench")
    # One thread keeps the smoke run fast and stable on a busy 2-core machine.
    argv = ["--quick", "-q", "--threads", "1", "--out", str(out), "--cases", SMOKE_CASES]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = run.main(argv)
    return status, stdout.getvalue(), out


def test_the_suite_is_not_in_the_installed_package():
    import importlib.util

    assert importlib.util.find_spec("fastcnn._bench") is None


def test_quick_run_succeeds_and_prints_the_tables(smoke):
    status, text, out = smoke
    assert status == 0, text
    for heading in ("Ops (median ms", "LeNet-5 (images/s", "\nTargets\n", "machine:"):
        assert heading in text
    # The report speaks to its readers, not to an issue tracker.
    assert not re.search(r"\bissue\s*#?\d", text + (out / "latest.md").read_text(), re.I)
    assert "conv digits" in text and "maxpool_64x6x28" in text
    assert "ERROR:" not in text
    assert f"wrote {out / 'latest.json'}" in text


def test_quick_run_writes_well_formed_json(smoke):
    _, _, out = smoke
    results = json.loads((out / "latest.json").read_text())
    assert results["schema"] == 1
    assert results["settings"]["threads"] == 1 and results["settings"]["quick"] is True
    assert results["errors"] == []
    assert results["machine"]["cpu"]["logical_cpus"] >= 1
    assert results["matmul"]["reference_gflops"] > 0

    entries = {(e["case"], e.get("pass")): e for e in results["results"]}
    conv = entries[("conv_digits", "fwd+bwd")]
    assert set(conv["impls"]) == IMPLS_OF_TABLE
    fast = conv["impls"]["fastcnn"]
    assert fast["status"] == "ok" and fast["median_ms"] > 0
    assert fast["samples_ms"] and fast["max_rel_error"] <= harness.OP_TOLERANCE
    assert conv["flops"] == 3 * 2.0 * 256 * 16 * 8 * 8 * 1 * 3 * 3
    assert fast["gflops"] == pytest.approx(conv["flops"] / (fast["median_ms"] * 1e6))
    loops = conv["impls"]["loops"]
    assert loops["status"] == "ok" and loops["scaled"] is True
    assert loops["measured_batch"] == 1 and loops["scale_factor"] == 256
    assert conv["speedup"]["numpy"] > 0

    train = entries[("lenet5_train", "train b64")]
    assert train["impls"]["fastcnn"]["images_per_s"] > 0
    assert train["impls"]["numpy"]["status"] == "ok"
    epoch = next(e for e in results["results"] if e["case"] == "lenet5_epoch")
    assert epoch["impls"]["fastcnn"]["extrapolated"] is True  # --quick never runs it

    memory = next(e for e in results["results"] if e["case"] == "lenet5_memory")
    assert memory["impls"]["fastcnn"]["status"] == "ok", memory
    assert memory["impls"]["fastcnn"]["rss_delta_mb"] >= 0
    assert memory["impls"]["fastcnn"]["tracemalloc_peak_mb"] > 0

    imported = next(e for e in results["results"] if e["case"] == "import")
    assert len(imported["import_samples_s"]) == 3
    assert math.isfinite(imported["seconds"])

    names = [t["target"] for t in results["targets"]]
    assert len(names) == len(set(names)) == 19
    assert {t["status"] for t in results["targets"]} <= {"PASS", "FAIL", "SKIP"}


def test_quick_run_writes_markdown_and_chart(smoke):
    _, _, out = smoke
    markdown = (out / "latest.md").read_text()
    assert markdown.startswith("### fastcnn benchmark")
    assert "| case | pass | fastcnn ms |" in markdown
    assert "| target | measured | required |" in markdown
    pytest.importorskip("matplotlib")
    png = out / "latest.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_exit_with_status_2(tmp_path, capsys):
    assert run.main(["--cases", "no_such_case", "--out", str(tmp_path)]) == 2
    assert "matches no case" in capsys.readouterr().err
    assert run.main(["--impls", "fastcnn,jax", "--out", str(tmp_path)]) == 2
    assert "unknown ['jax']" in capsys.readouterr().err


def test_case_selection():
    assert run.select("lenet_c", quick=False) == {"conv_lenet_c1", "conv_lenet_c2"}
    assert run.select("avgpool_*", quick=False) == {
        "avgpool_64x6x28", "avgpool_32x64x32", "avgpool_16x64x56",
    }  # fmt: skip
    assert run.select(None, quick=True) == set(run.QUICK_CASES)
    assert run.select(None, quick=False) == set(run.CASE_IDS)


def test_textbook_loops_match_the_library(rng):
    x = rng.standard_normal((2, 3, 7, 6), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 2), dtype=np.float32)
    b = rng.standard_normal(4, dtype=np.float32)
    y = F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0))
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    loops_y = loops.conv2d(x, w, b, stride=(2, 1), pad=(1, 0))
    np.testing.assert_allclose(loops_y, y, rtol=1e-4, atol=1e-5)
    expected = F.conv2d_backward(gy, x, w, stride=(2, 1), padding=(1, 0))
    got = loops.conv2d_backward(gy, x, w, stride=(2, 1), pad=(1, 0))
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)

    x = rng.standard_normal((2, 3, 6, 8), dtype=np.float32)
    y, idx = F.max_pool2d(x, 2)
    loops_y, loops_idx = loops.max_pool2d(x)
    np.testing.assert_array_equal(loops_y, y)
    np.testing.assert_array_equal(loops_idx, idx)
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    np.testing.assert_array_equal(
        loops.max_pool2d_backward(gy, idx, x.shape),
        F.max_pool2d_backward(gy, idx, x.shape),
    )
    np.testing.assert_allclose(loops.avg_pool2d(x), F.avg_pool2d(x, 2), rtol=1e-6)
    np.testing.assert_allclose(
        loops.avg_pool2d_backward(gy, x.shape), F.avg_pool2d_backward(gy, x.shape, 2)
    )


def test_a_wrong_kernel_is_not_timed(monkeypatch):
    """An implementation that disagrees with the oracle gets WRONG and no timing."""
    if "cython" not in fastcnn.available_backends():
        pytest.skip("needs the compiled backend")
    settings = harness.Settings(
        threads=1, quick=True, budget=0.0, warmup=0.0, min_repeats=1, warmup_calls=0,
        loops_budget=0.0, import_runs=1, memory_steps=1, matmul_size=64, verbose=False,
    )  # fmt: skip
    unavailable = {"torch": "test", "loops": "test", "numpy": "test"}
    ctx = harness.Context(settings, {"maxpool_64x6x28"}, None, unavailable)
    case = cases.PoolCase("avg", 4, 2, 8, np.random.default_rng(0))
    case.oracle("fwd", case.batch)  # computed (and cached) with the real op
    real = F.avg_pool2d
    monkeypatch.setattr(F, "avg_pool2d", lambda x, k: real(x, k) * 1.01)
    entry = cases.run_op_case(case, "fwd", ctx)
    assert entry["impls"]["fastcnn"]["status"] == "wrong"
    assert "median_ms" not in entry["impls"]["fastcnn"]
    assert ctx.errors and "disagrees" in ctx.errors[0]


def _result(case, pass_, **median_ms):
    impls = {impl: {"status": "ok", "median_ms": ms} for impl, ms in median_ms.items()}
    entry = {"case": case, "pass": pass_, "group": "conv", "impls": impls}
    harness.add_speedups(entry)
    return entry


def test_targets_are_evaluated_from_the_ratios():
    results = {
        "settings": {"threads": 2},
        "matmul": {"reference_gflops": 100.0, "reference": "numpy"},
        "results": [
            _result("lenet5_train", "train b64", fastcnn=10.0, torch=25.0, numpy=40.0),
            _result("conv_mid", "fwd+bwd", fastcnn=10.0, torch=9.0),
            {**_result("conv_large", "fwd+bwd", fastcnn=1.0, torch=2.0), "pct_of_matmul": 75.0},
            {"case": "import", "group": "import", "seconds": 0.31},
            {
                "case": "lenet5_memory",
                "group": "memory",
                "impls": {"fastcnn": {"rss_delta_mb": 5.0}, "torch": {"rss_delta_mb": 20.0}},
            },  # fmt: skip
        ],
    }
    scored = {t["target"]: t for t in targets.evaluate_targets(results)}
    train = scored["LeNet-5 training step b64 vs PyTorch"]
    assert train["status"] == "PASS" and train["measured"] == pytest.approx(2.5)
    assert scored["LeNet-5 training step: compiled vs numpy"]["status"] == "FAIL"  # 4x < 5x
    assert scored["conv mid fwd+bwd vs PyTorch"]["status"] == "FAIL"  # 0.9x < 1x
    assert scored["conv large fwd+bwd vs PyTorch"]["status"] == "PASS"
    assert scored["conv large fwd+bwd, % of matmul GFLOP/s"]["status"] == "PASS"
    assert scored["import fastcnn, fresh interpreter (median)"]["status"] == "FAIL"
    memory = scored["LeNet-5 training-step peak memory: PyTorch / fastcnn (RSS)"]
    assert memory["status"] == "PASS" and memory["measured"] == pytest.approx(4.0)
    assert scored["conv digits fwd+bwd vs PyTorch"]["status"] == "SKIP"
    assert scored["LeNet-5 training step: 2 threads vs 1 thread"]["status"] == "SKIP"
    # The report renders whatever was measured.
    text = report.format_text({
        **results, "targets": list(scored.values()), "created": "now", "command": "x",
        "wall_time_s": 1.0, "errors": [],
        "machine": {
            "cpu": {"model": "cpu", "logical_cpus": 2}, "platform": "p", "env": {},
            "versions": {"python": "3", "numpy": "2", "scipy": "1", "fastcnn": "0", "torch": None},
        },
    })  # fmt: skip
    assert "targets: 4 PASS, 3 FAIL, 12 SKIP" in text


def test_targets_are_data_each_with_a_metric_and_a_reason(tmp_path):
    specs = targets.load_targets()
    assert len(specs) == 19 and all(spec["reason"].strip() for spec in specs)
    assert {spec["metric"] for spec in specs} == set(targets.METRICS)
    assert not re.search(r"\bissue\s*#?\d", targets.TARGETS_FILE.read_text(), re.I)
    bad = tmp_path / "targets.json"
    bad.write_text(json.dumps({"targets": [{**specs[0], "metric": "fastness"}]}))
    with pytest.raises(ValueError, match="unknown metric 'fastness'"):
        targets.load_targets(bad)
    bad.write_text(json.dumps({"targets": [{k: v for k, v in specs[0].items() if k != "reason"}]}))
    with pytest.raises(ValueError, match="lacks \\['reason'\\]"):
        targets.load_targets(bad)
    # A target list of one's own is scored the same way.
    one = {"name": "conv digits at {threads} threads", "metric": "speedup", "case": "conv_digits",
           "pass": "fwd", "vs": "numpy", "threshold": 3.0, "reason": "a test"}  # fmt: skip
    results = {
        "settings": {"threads": 4},
        "results": [_result("conv_digits", "fwd", fastcnn=1.0, numpy=2.0)],
    }
    (scored,) = targets.evaluate_targets(results, [one])
    assert scored["target"] == "conv digits at 4 threads"
    assert scored["status"] == "FAIL" and scored["measured"] == pytest.approx(2.0)


def test_heaviest_imports_are_those_fastcnn_makes():
    importtime = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 |   _io",
        "import time:      1000 |       1100 | io",
        "import time:       500 |        500 |       scipy._lib",
        "import time:     20000 |      20500 |     scipy.linalg",
        "import time:       300 |      20800 |   fastcnn._kernels",
        "import time:     50000 |      50000 |   numpy",
        "import time:       200 |      71000 | fastcnn",
    ])  # fmt: skip
    assert fresh.heaviest_imports(importtime) == {"numpy": 0.05, "scipy.linalg": 0.0205}


def test_thread_scaling_is_measured_in_alternating_blocks(monkeypatch):
    """Both thread counts are timed in turns, so a machine that slows down part-way
    through affects both alike; the target is the ratio of their medians."""
    import fastcnn

    settings = harness.Settings(
        threads=2, quick=False, budget=0.08, warmup=0.0, min_repeats=8, warmup_calls=0,
        loops_budget=0.0, import_runs=1, memory_steps=1, matmul_size=64, verbose=False,
    )  # fmt: skip
    ctx = harness.Context(settings, {"lenet5_threads1"}, None, {})
    order = []

    def step():  # twice as fast with two threads; records which count ran
        n = fastcnn.get_num_threads()
        order.append(n)
        time.sleep(0.002 / n)

    one, scaling = lenet.interleaved_scaling(ctx, step)
    assert scaling["speedup"] == pytest.approx(2.0, rel=0.3)
    assert one["median_ms"] == pytest.approx(2.0, rel=0.3)
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert switches >= 2 * lenet.SCALING_ROUNDS - 1  # 2, 1, 2, 1, ... block by block
    results = {
        "settings": {"threads": 2},
        "results": [{"case": "lenet5_threads1", "pass": "train b64 @1 thread",
                     "impls": {}, "scaling": scaling}],
    }  # fmt: skip
    scored = {t["target"]: t for t in targets.evaluate_targets(results)}
    target = scored["LeNet-5 training step: 2 threads vs 1 thread"]
    assert target["status"] == "PASS" and target["measured"] == scaling["speedup"]
    assert "interleaved" in target["note"]


# ---------------------------------------------------------------------------------------
# Alternating rounds. A fake clock stands in for the time module of the harness, so
# these tests never sleep and never depend on the speed of the machine: each fake
# implementation advances the clock by its "duration" when called.


class _FakeClock:
    """``perf_counter`` for the harness: time moves only when a fake implementation runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:  # the wait for other libraries' workers
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """The fake clock in the harness and the op cases, whose gc.collect() calls are skipped
    too: each costs ~0.1 s once PyTorch is imported, and a fake clock cannot see them."""
    fake = _FakeClock()
    fake_gc = types.SimpleNamespace(
        collect=lambda: 0, isenabled=gc.isenabled, disable=gc.disable, enable=gc.enable
    )
    for module in (harness, cases):
        monkeypatch.setattr(module, "time", fake)
    monkeypatch.setattr(harness, "gc", fake_gc)
    # No wait for other threads: on a loaded machine a thread of this process (pytest's,
    # a pool's) can be runnable at any moment, and each fake sleep would move the clock by
    # a step that is not a power of two, so block budgets stopped being exact.
    monkeypatch.setattr(harness, "running_threads", lambda: 0)
    return fake


def _recorder(log, name, clock, seconds):
    """A fake implementation: appends ``name`` to ``log``; each call takes ``seconds``."""
    durations = iter(seconds) if isinstance(seconds, list) else None

    def call():
        log.append(name)
        clock.now += next(durations) if durations is not None else seconds

    return call


def _logging_context(log):
    """``contexts`` for the helper: logs when each implementation's context opens and closes."""

    @contextlib.contextmanager
    def context(key):
        log.append(("enter", key))
        try:
            yield
        finally:
            log.append(("exit", key))

    return context


def _spinner(stop, seconds=math.inf):
    """A thread that stays on a CPU, like a thread pool's idle worker, until ``stop`` is
    set or ``seconds`` pass: hashing a large buffer runs without the GIL."""
    data = bytes(1 << 22)

    def spin():
        end = time.perf_counter() + seconds
        while not stop.is_set() and time.perf_counter() < end:
            hashlib.sha256(data)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread


needs_proc = pytest.mark.skipif(
    harness.running_threads() is None, reason="thread states are read from /proc (Linux)"
)


@needs_proc
def test_running_threads_sees_a_spinning_worker():
    stop = threading.Event()
    thread = _spinner(stop)
    try:
        seen = max(harness.running_threads() for _ in range(50))
    finally:
        stop.set()
        thread.join()
    assert seen >= 1
    assert harness.wait_for_quiet_threads(timeout=5.0) < 5.0


@needs_proc
def test_blocks_wait_until_other_threads_stop_spinning():
    stop = threading.Event()
    thread = _spinner(stop, seconds=0.3)
    waited = harness.wait_for_quiet_threads(timeout=5.0)
    thread.join()
    assert 0.2 <= waited < 5.0


@needs_proc
def test_the_wait_for_quiet_threads_gives_up_at_its_timeout():
    stop = threading.Event()
    thread = _spinner(stop)
    try:
        waited = harness.wait_for_quiet_threads(timeout=0.1)
    finally:
        stop.set()
        thread.join()
    assert 0.1 <= waited < 2.0


def test_interleaved_blocks_alternate_each_under_its_own_context(clock):
    log = []
    # Powers of two keep the fake clock exact: a block of 1.0 / 4 s holds 4 calls of a
    # (1/16 s each) and 2 calls of b (1/8 s each).
    fns = {"a": _recorder(log, "a", clock, 1 / 16), "b": _recorder(log, "b", clock, 1 / 8)}
    timings = harness.measure_interleaved(
        fns, budget=1.0, min_repeats=1, warmup=0.0, warmup_calls=1, rounds=4,
        contexts=_logging_context(log), block_warmup_calls=2, serpentine=False,
    )  # fmt: skip

    def block(key, calls):
        return [("enter", key), *[key] * calls, ("exit", key)]

    warmups = block("a", 1) + block("b", 1)  # once each, before the first round
    one_round = block("a", 2 + 4) + block("b", 2 + 2)  # block warm-up, then timed calls
    assert log == warmups + one_round * 4
    a, b = timings["a"], timings["b"]
    assert (a["repeats"], b["repeats"]) == (4 * 4, 4 * 2)
    assert a["samples_ms"] == [62.5] * 16 and b["samples_ms"] == [125.0] * 8
    assert (a["median_ms"], b["median_ms"]) == (62.5, 125.0)
    assert a["warmup_calls"] == b["warmup_calls"] == 1 + 4 * 2
    assert a["rounds"] == b["rounds"] == 4
    assert set(a) >= {"median_ms", "samples_ms", "repeats", "warmup_calls"}  # as _measure


def test_interleaved_rounds_reverse_their_order_every_other_round(clock):
    """The default (serpentine) order: the first and the last implementation each follow
    the middle one in half the rounds, so a switch that costs the next library extra
    falls on both alike."""
    log = []
    fns = {key: _recorder(log, key, clock, 1 / 16) for key in ("a", "b", "c")}
    harness.measure_interleaved(
        fns, budget=0.0, min_repeats=4, warmup_calls=0, rounds=4, block_warmup_calls=0
    )
    assert log == [*"abc", *"cba", *"abc", *"cba"]


def test_interleaved_median_is_that_of_the_pooled_samples(clock):
    log = []
    # a gets slower call by call; each round's block holds min_repeats // rounds = 2 calls.
    a_ms = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    fns = {
        "a": _recorder(log, "a", clock, [ms / 1e3 for ms in a_ms]),
        "b": _recorder(log, "b", clock, 0.001),
    }
    timings = harness.measure_interleaved(
        fns, budget=0.0, min_repeats=6, warmup=0.0, warmup_calls=0, rounds=3,
        block_warmup_calls=0,
    )  # fmt: skip
    assert log == [*"aabb", *"bbaa", *"aabb"]
    a = timings["a"]
    assert a["samples_ms"] == pytest.approx(a_ms)  # every round's samples, in order
    # The median of all six, not of a block's (15 ms, 35 ms or 55 ms) nor of the medians.
    assert a["median_ms"] == pytest.approx(35.0)
    assert a["median_ms"] == pytest.approx(statistics.median(a["samples_ms"]))


def test_interleaving_cancels_a_drift_that_biases_back_to_back_blocks(clock):
    """Two equally fast implementations on a machine that slows down steadily: timed one
    after the other the second looks much slower; in alternating rounds they match."""

    def drifting(log, name):
        def call():
            log.append(name)
            clock.now += 0.001 * (1.0 + clock.now)  # a call takes longer as time passes

        return call

    log = []
    first, second = drifting(log, "first"), drifting(log, "second")
    back_to_back = [harness.measure(fn, 1.0, 1, 0.0, 0)["median_ms"] for fn in (first, second)]
    assert back_to_back[1] / back_to_back[0] > 1.5
    clock.now = 0.0
    rounds = harness.measure_interleaved(
        {"first": first, "second": second}, budget=1.0, min_repeats=1, warmup_calls=0,
        rounds=50, block_warmup_calls=0,
    )  # fmt: skip
    assert rounds["second"]["median_ms"] / rounds["first"]["median_ms"] == pytest.approx(
        1.0, abs=0.05
    )


def test_an_implementation_that_raises_leaves_the_rounds(clock):
    log = []
    good = _recorder(log, "good", clock, 0.001)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) > 2:  # fails in its second block
            raise RuntimeError("kernel crashed")

    fns = {"flaky": flaky, "good": good}
    args = dict(budget=0.0, min_repeats=3, warmup_calls=0, rounds=3, block_warmup_calls=1)
    with pytest.raises(RuntimeError, match="kernel crashed"):  # no failures dict: raised
        harness.measure_interleaved(fns, **args)
    calls.clear()
    failures = {}
    timings = harness.measure_interleaved(fns, **args, failures=failures)
    assert set(timings) == {"good"} and timings["good"]["repeats"] == 3
    assert isinstance(failures["flaky"], RuntimeError)


class _CountingCase(cases.OpCase):
    """A fake op case whose implementations log their calls and the backend they ran on;
    each call takes 1 ms of the fake clock."""

    id, group, label, shape, batch = "fake_op", "pool", "fake", "N=2", 2
    passes = ("fwd",)

    def __init__(self, clock: _FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, str]] = []
        self.out = np.arange(8.0)

    def make(self, impl, pass_, batch, torch):
        def call():
            self.calls.append((impl, fastcnn.get_backend()))
            self.clock.now += 0.001
            return (self.out[: 4 * batch],)

        return call

    def oracle(self, pass_, batch):
        return (self.out[: 4 * batch],)


def _fake_case_ctx(quick: bool):
    settings = harness.Settings(
        threads=1, quick=quick, budget=0.0, warmup=0.0, min_repeats=harness.INTERLEAVE_ROUNDS,
        warmup_calls=1, loops_budget=0.0, import_runs=1, memory_steps=1, matmul_size=64,
        verbose=False,
    )  # fmt: skip
    return harness.Context(settings, {"fake_op"}, None, {})


def test_quick_op_case_is_timed_by_its_one_checked_call(clock):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("needs the compiled backend")
    case = _CountingCase(clock)
    ctx = _fake_case_ctx(quick=True)
    entry = cases.run_op_case(case, "fwd", ctx)
    assert ctx.errors == []
    assert [impl for impl, _ in case.calls] == list(harness.IMPLS)  # one call each
    for impl in harness.IMPLS:
        assert entry["impls"][impl]["repeats"] == 1
        assert entry["impls"][impl]["warmup_calls"] == 0
    assert "--quick" in entry["timing"]


def test_op_case_times_its_implementations_in_alternating_rounds(clock):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("needs the compiled backend")
    case = _CountingCase(clock)
    ctx = _fake_case_ctx(quick=False)
    entry = cases.run_op_case(case, "fwd", ctx)
    assert ctx.errors == []
    rounds, compared = harness.INTERLEAVE_ROUNDS, ("fastcnn", "numpy", "torch")
    backend = {"fastcnn": "cython", "numpy": "numpy"}
    for impl, active in case.calls:  # every call ran under its own implementation's backend
        assert active == backend.get(impl, active)
    # The checks (one call each, in table order), then loops' single block, then the
    # initial warm-up of the others and the rounds, in serpentine order: each block
    # opens with its warm-up calls, and the minimum of repeats is spread over the rounds
    # (budget 0: one timed call each).
    block = 1 + harness.BLOCK_WARMUP_CALLS
    blocks = [
        impl for r in range(rounds) for impl in compared[:: -1 if r % 2 else 1]
        for _ in range(block)
    ]  # fmt: skip
    order = [impl for impl, _ in case.calls]
    assert order == [*harness.IMPLS, "loops", *compared, *blocks]
    for impl in compared:
        result = entry["impls"][impl]
        assert result["status"] == "ok" and result["rounds"] == rounds
        assert result["repeats"] == len(result["samples_ms"]) == rounds
    loops = entry["impls"]["loops"]
    assert loops["repeats"] == 1 and loops["scaled"] is True and loops["scale_factor"] == 2
    assert entry["timing"].startswith(f"interleaved: {rounds} rounds")


def test_quick_run_reports_how_it_timed(smoke):
    _, text, out = smoke
    results = json.loads((out / "latest.json").read_text())
    assert results["settings"]["interleave_rounds"] == harness.INTERLEAVE_ROUNDS
    assert "timing: --quick" in text
    assert "- timing: --quick" in (out / "latest.md").read_text()
    for entry in results["results"]:
        if entry["group"] in ("conv", "pool", "model"):
            assert "--quick" in entry["timing"]


def test_step_profile_times_every_part_at_both_thread_counts():
    # benchmarks/profile_step.py: the per-layer table of the training step.
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "profile_step.py"
    if not script.exists():
        pytest.skip("benchmarks/ is not copied into the installed-wheel test run")
    spec = importlib.util.spec_from_file_location("profile_step", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = module.main(["--threads", "2", "--steps", "8", "--batch", "4"])
    lines = stdout.getvalue().splitlines()
    assert status == 0
    layers = [type(layer).__name__ for layer in fastcnn.models.lenet5()]
    rows = {line.rsplit(None, 3)[0]: line.split()[-3:] for line in lines if line.endswith("x")}
    for i, name in enumerate(layers):
        assert f"forward {name} {i}" in rows
        assert f"backward {name} {i}" in rows
    assert {"loss", "sgd", "whole step"} <= rows.keys()
    for one, two, speedup in rows.values():
        one, two, speedup = float(one), float(two), float(speedup[:-1])
        assert one > 0 and two > 0 and speedup > 0
        if two >= 100:  # times to 0.1 us, the speedup to 0.01: the ratios agree
            assert math.isclose(speedup, one / two, rel_tol=0.01, abs_tol=0.006)


# ---------------------------------------------------------------------------------------
# The chart (benchmarks/plot.py)


def _timing(ms, status="ok"):
    return {"status": status, "median_ms": ms} if status == "ok" else {"status": status}


def _results():
    """A small results dict in the layout of benchmarks/README.md."""
    return {
        "settings": {
            "threads": 2,
            "implementations": {"fastcnn": "fastcnn (compiled)", "numpy": "numpy backend",
                                "torch": "PyTorch CPU"},
        },  # fmt: skip
        "machine": {"cpu": {"model": "Test CPU"}},
        "results": [
            {"case": "conv_a", "group": "conv", "label": "a", "pass": "fwd",
             "impls": {"fastcnn": _timing(1.0), "numpy": _timing(10.0),
                       "torch": _timing(3.0)},
             "speedup": {"numpy": 10.0, "torch": 3.0}},
            {"case": "maxpool_2x3x8", "group": "pool", "label": "maxpool", "pass": "fwd+bwd",
             "impls": {"fastcnn": _timing(0.5), "numpy": _timing(None, "wrong"),
                       "torch": _timing(2.0)},
             "speedup": {"torch": 4.0}},
            {"case": "lenet5_memory", "group": "memory", "impls": {"fastcnn": {"status": "ok"}}},
            {"case": "import", "group": "import", "seconds": 0.1},
        ],
    }  # fmt: skip


def test_benchmark_bars_are_the_medians_on_a_log_scale():
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib")
    from matplotlib.figure import Figure

    fig = plot.plot_benchmark(_results())
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    bars = {c.get_label(): [r.get_height() for r in c] for c in ax.containers}
    assert list(bars) == ["fastcnn (compiled)", "numpy backend", "PyTorch CPU"]
    assert bars["fastcnn (compiled)"] == [1.0, 0.5]
    assert bars["numpy backend"][0] == 10.0 and np.isnan(bars["numpy backend"][1])  # WRONG
    assert bars["PyTorch CPU"] == [3.0, 2.0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["a\nfwd", "maxpool_2x3x8\nfwd+bwd"]  # memory and import left out
    assert [t.get_text() for t in ax.texts] == ["3.0x", "4.0x"]
    assert [t.xy for t in ax.texts] == [(0, 10.0), (1, 2.0)]  # above the tallest bar
    assert ax.get_title() == (
        "fastcnn benchmark: Test CPU, 2 threads; numbers above bars: PyTorch CPU time / "
        "fastcnn time"
    )


def test_benchmark_options():
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib")
    fig = plot.plot_benchmark(_results(), impls=["fastcnn", "torch"], speedup=None)
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == ["fastcnn (compiled)", "PyTorch CPU"]
    assert len(ax.texts) == 0
    ax = plot.plot_benchmark(_results(), speedup=["torch", "numpy"]).axes[0]
    assert [(t.get_text(), t.get_color()) for t in ax.texts] == [
        ("3.0x", "#d62728"), ("10.0x", "#ff7f0e"), ("4.0x", "#d62728"),
    ]  # fmt: skip


@pytest.mark.skipif(not LATEST_JSON.exists(), reason="no committed benchmark results here")
def test_benchmark_from_the_committed_json_file():
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib")
    results = json.loads(LATEST_JSON.read_text())
    entries = [
        e for e in results["results"]
        if e["group"] in ("conv", "pool", "model")
        and any(r.get("status") == "ok" for r in e["impls"].values())
    ]  # fmt: skip
    ax = plot.plot_benchmark(LATEST_JSON).axes[0]
    assert len(ax.get_xticks()) == len(entries)
    for container in ax.containers:
        impl = next(k for k, v in results["settings"]["implementations"].items()
                    if v == container.get_label())  # fmt: skip
        medians = [e["impls"].get(impl, {}).get("median_ms") for e in entries]
        heights = [r.get_height() for r in container]
        np.testing.assert_allclose(heights, [np.nan if m is None else m for m in medians])
    labelled = [e for e in entries if e.get("speedup", {}).get("torch") is not None]
    assert [t.get_text() for t in ax.texts] == [f"{e['speedup']['torch']:.1f}x" for e in labelled]


@pytest.mark.parametrize(
    "results, kwargs, error, message",
    [
        (42, {}, TypeError, "results must be the benchmark results dict or the path"),
        ({"settings": {}}, {}, ValueError, "it has no 'results' list"),
        ({"results": [_results()["results"][2]]}, {}, ValueError, "no timed conv, pool or model"),
        (_results(), {"impls": ["fastcnn", "jax"]}, ValueError, "impls: unknown or never timed"),
        (_results(), {"speedup": "fastcnn"}, ValueError, "speedup: cannot compare fastcnn"),
        (_results(), {"speedup": ["loops"]}, ValueError, "with ['loops']"),
    ],
)
def test_benchmark_errors(results, kwargs, error, message):
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib")
    with pytest.raises(error) as info:
        plot.plot_benchmark(results, **kwargs)
    assert message in str(info.value)


def test_benchmark_file_errors(tmp_path):
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib")
    bad = tmp_path / "latest.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        plot.plot_benchmark(bad)
    with pytest.raises(FileNotFoundError):
        plot.plot_benchmark(tmp_path / "missing.json")


def test_run_plot_delegates_to_plot_benchmark(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib")
    path = tmp_path / "latest.png"
    assert plot.plot(_results(), path) == path
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert plot.plot({"results": []}, tmp_path / "none.png") is None
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert plot.plot(_results(), tmp_path / "no_matplotlib.png") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.png"]


@pytest.mark.skipif(not LATEST_JSON.exists(), reason="no committed benchmark results here")
def test_plot_command_redraws_a_saved_run(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib")
    out = tmp_path / "chart.png"
    assert plot.main([str(LATEST_JSON), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert plot.main([str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err
