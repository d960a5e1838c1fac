"""Property-based fuzzing of every functional op (hypothesis).

Valid inputs: random shapes and parameters (stride, padding incl. 'same' and 'valid',
dilation, groups, ceil_mode, count_include_pad, divisor_override), both dtypes, thread
counts, and memory layouts (strided, transposed, negative-stride, read-only, broadcast
views): the compiled backend must equal the numpy reference, and pooling indices must be
identical. Invalid inputs: one parameter or array replaced by something wrong (negative,
zero, huge, wrong type or rank, mismatched dtype or shape): a ValueError or TypeError,
never another exception and never a crash.

Budget, chosen with the environment variable ``FASTCNN_FUZZ``:

* ``ci`` (default): 300 examples per valid-input test and 400 per invalid-input test
  (over 3000 cases in all); the whole file runs in about 10 s on 2 cores. Derandomized
  and without an example database, so every CI run tries the same cases.
* ``long``: 20000 examples per valid-input test (80000 compiled-vs-reference cases),
  new random cases every run, failures saved in ``.hypothesis/`` and replayed first next
  time; the invalid-input tests then enumerate their whole (finite) space of faults, 586
  to 18032 distinct calls each. Start it by hand:
  ``FASTCNN_FUZZ=long python -m pytest tests/test_fuzz.py -x --hypothesis-show-statistics``
  (about 5 minutes on 2 cores).
"""

import os

import numpy as np
import pytest
from conftest import tol
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
import fastcnn.functional as F

pytestmark = [
    pytest.mark.skipif(
        "cython" not in fastcnn.available_backends(),
        reason="compiled extension not importable: nothing to compare with the reference",
    ),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # inf - inf in NaN/inf cases
]

_PROFILES = {
    "ci": {"valid": 300, "invalid": 400, "derandomize": True},
    "long": {"valid": 20000, "invalid": 20000, "derandomize": False},
}
_PROFILE = os.environ.get("FASTCNN_FUZZ", "ci").strip().lower() or "ci"
if _PROFILE not in _PROFILES:
    raise ValueError(f"FASTCNN_FUZZ must be one of {sorted(_PROFILES)}, got {_PROFILE!r}")


def _settings(kind: str) -> settings:
    profile = _PROFILES[_PROFILE]
    extra = {"database": None} if profile["derandomize"] else {}
    return settings(
        **extra,
        max_examples=profile[kind],
        derandomize=profile["derandomize"],
        deadline=None,  # a shared 2-core machine has pauses; time is bounded by the sizes
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=True,
    )


VALID = _settings("valid")
INVALID = _settings("invalid")

DTYPES = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])
LAYOUTS = ["contiguous", "fortran", "strided", "transposed", "negative", "readonly", "broadcast"]


# ---------------------------------------------------------------------------------------
# Helpers


def _on_both_backends(op, *args, **kwargs):
    """(compiled result, reference result) of the same call."""
    with fastcnn.use_backend("numpy"):
        expected = op(*args, **kwargs)
    with fastcnn.use_backend("cython"):
        got = op(*args, **kwargs)
    return got, expected


@pytest.fixture(autouse=True)
def _restore_threads():
    previous = fastcnn.get_num_threads()
    yield
    fastcnn.set_num_threads(None)
    if fastcnn.get_num_threads() != previous:
        fastcnn.set_num_threads(previous)


def _values(draw, shape, dtype, special: bool):
    """Random data: normal values, or small integers (ties), optionally with NaN/inf."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        data = rng.standard_normal(shape)
    else:
        data = rng.integers(-3, 4, shape).astype(np.float64)  # many ties
    if special and data.size and draw(st.booleans()):
        flat = data.reshape(-1)
        for value in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3)):
            flat[rng.integers(flat.size)] = value
    return data.astype(dtype)


def _layout(draw, array: np.ndarray) -> np.ndarray:
    """The values of ``array`` in a random memory layout (a view where possible).

    ``broadcast`` repeats the first entry along axis 0 with a zero stride (read-only),
    so it changes the values; both backends get the same array either way.
    """
    kind = draw(st.sampled_from(LAYOUTS))
    if kind == "broadcast" and array.shape[0] > 0:
        out = np.broadcast_to(array[:1], array.shape)
        event("layout broadcast")
        return out
    if kind == "fortran":
        out = np.asfortranarray(array)
    elif kind == "strided":  # every other element of a larger buffer
        big = np.zeros(tuple(2 * s for s in array.shape), array.dtype)
        big[tuple(slice(None, None, 2) for _ in array.shape)] = array
        out = big[tuple(slice(None, None, 2) for _ in array.shape)]
    elif kind == "transposed":  # channels-last storage seen as NCHW
        out = np.ascontiguousarray(np.moveaxis(array, 1, -1))
        out = np.moveaxis(out, -1, 1)
    elif kind == "negative":
        out = np.ascontiguousarray(array[..., ::-1, ::-1])[..., ::-1, ::-1]
    elif kind == "readonly":
        out = array.copy()
        out.flags.writeable = False
    else:
        out = array
    assert_array_equal(out, array)
    event(f"layout {kind}")
    return out


def _threads(draw):
    fastcnn.set_num_threads(draw(st.integers(1, 3)))


def _assert_close(got, expected, dtype, what):
    assert got.dtype == expected.dtype == dtype, what
    assert got.shape == expected.shape, what
    assert got.flags.c_contiguous, what
    assert_allclose(got, expected, err_msg=what, **tol(dtype))


# ---------------------------------------------------------------------------------------
# Convolution: valid inputs


@st.composite
def conv_cases(draw):
    dtype = draw(DTYPES)
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    mode = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    stride = (1, 1) if mode == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if mode == "int":
        padding = draw(st.integers(0, 3))
        pads = (padding, padding)
    elif mode == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        pads = padding
    else:
        padding = mode
        pads = (0, 0)
    # Smallest input the kernel fits in ('same' pads whatever the input size).
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    low = [1 if mode == "same" else max(1, e - 2 * p) for e, p in zip(extent, pads, strict=True)]
    h, w = draw(st.integers(low[0], low[0] + 6)), draw(st.integers(low[1], low[1] + 6))
    n = draw(st.integers(0, 3))
    x = _values(draw, (n, c_in, h, w), dtype, special=False)
    weight = _values(draw, (c_out, c_in // groups, kh, kw), dtype, special=False)
    bias = _values(draw, (c_out,), dtype, special=False) if draw(st.booleans()) else None
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if draw(st.booleans()):  # ints instead of pairs where the pair is square
        kwargs = {k: v[0] if isinstance(v, tuple) and v[0] == v[1] else v
                  for k, v in kwargs.items()}  # fmt: skip
    _threads(draw)
    return dtype, _layout(draw, x), _layout(draw, weight), bias, kwargs


@VALID
@given(case=conv_cases())
def test_conv2d_compiled_equals_reference(case):
    dtype, x, weight, bias, kwargs = case
    got, expected = _on_both_backends(F.conv2d, x, weight, bias, **kwargs)
    _assert_close(got, expected, dtype, f"conv2d {x.shape} {weight.shape} {kwargs}")


@VALID
@given(case=conv_cases(), needs_input_grad=st.booleans(), data=st.data())
def test_conv2d_backward_compiled_equals_reference(case, needs_input_grad, data):
    dtype, x, weight, _, kwargs = case
    out_shape = F.conv2d(x, weight, **kwargs).shape
    grad_out = _layout(data.draw, _values(data.draw, out_shape, dtype, special=False))
    got, expected = _on_both_backends(
        F.conv2d_backward, grad_out, x, weight, **kwargs, needs_input_grad=needs_input_grad
    )
    what = f"conv2d_backward {x.shape} {weight.shape} {kwargs}"
    if needs_input_grad:
        _assert_close(got[0], expected[0], dtype, "grad_x of " + what)
        assert got[0].shape == x.shape
    else:
        assert got[0] is None and expected[0] is None
    _assert_close(got[1], expected[1], dtype, "grad_weight of " + what)
    _assert_close(got[2], expected[2], dtype, "grad_bias of " + what)


@st.composite
def batch_lanes_conv_cases(draw):
    """float32 stride-1 shapes at batch sizes around multiples of 16, large kernels and
    little padding: the backward pass mostly goes across the lanes (src/batch_lanes.c)."""
    groups = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(3, 8)), groups * draw(st.integers(4, 16))
    kh, kw = draw(st.integers(3, 7)), draw(st.integers(3, 7))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = draw(st.integers(max(1, extent[0] - 2 * padding[0]), extent[0] + 8))
    w = draw(st.integers(max(1, extent[1] - 2 * padding[1]), extent[1] + 8))
    n = draw(st.sampled_from([16, 30, 32, 45, 48]))
    f32 = np.dtype(np.float32)
    x = _values(draw, (n, c_in, h, w), f32, special=False)
    weight = _values(draw, (c_out, c_in // groups, kh, kw), f32, special=False)
    _threads(draw)
    return x, weight, {"padding": padding, "dilation": dilation, "groups": groups}


@VALID
@given(case=batch_lanes_conv_cases(), data=st.data())
def test_conv2d_backward_across_the_batch_equals_reference(case, data):
    from fastcnn._kernels import _conv

    x, weight, kwargs = case
    c_out, _, kh, kw = weight.shape
    path = _conv._plan(
        x.shape[0], *x.shape[1:], c_out, kh, kw, *kwargs["padding"], *kwargs["dilation"],
        kwargs["groups"],
    )["input_grad"]  # fmt: skip
    event(f"input gradient path: {path}")
    out_shape = F.conv2d(x, weight, **kwargs).shape
    grad_out = _values(data.draw, out_shape, np.dtype(np.float32), special=False)
    with fastcnn.use_backend("cython"):
        got = F.conv2d_backward(grad_out, x, weight, **kwargs)
    # Sums of hundreds of float32 products: compared with the float64 reference, to
    # within a rounding bound on the sum of the products' magnitudes (the same gradients
    # of |x|, |weight| and |grad_out|), as cancellation can leave a small exact value.
    with fastcnn.use_backend("numpy"):
        exact = F.conv2d_backward(*(a.astype(np.float64) for a in (grad_out, x, weight)),
                                  **kwargs)  # fmt: skip
        scale = F.conv2d_backward(*(np.abs(a).astype(np.float64) for a in (grad_out, x, weight)),
                                  **kwargs)  # fmt: skip
    what = f"conv2d_backward {x.shape} {weight.shape} {kwargs} ({path})"
    for name, g, e, m in zip(("grad_x", "grad_weight", "grad_bias"), got, exact, scale,
                             strict=True):  # fmt: skip
        assert g.dtype == np.float32 and g.shape == e.shape, f"{name} of {what}"
        assert np.all(np.abs(g - e) <= 2e-6 * m + 1e-30), f"{name} of {what}"


# ---------------------------------------------------------------------------------------
# Pooling: valid inputs


@st.composite
def pool_cases(draw, dilated: bool):
    dtype = draw(DTYPES)
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = None if draw(st.booleans()) else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilated else (1, 1)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    low = [max(1, e - 2 * p) for e, p in zip(extent, padding, strict=True)]
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    shape = (n, c, draw(st.integers(low[0], low[0] + 7)), draw(st.integers(low[1], low[1] + 7)))
    x = _values(draw, shape, dtype, special=True)
    kwargs = {"kernel_size": kernel, "stride": stride, "padding": padding,
              "ceil_mode": draw(st.booleans())}  # fmt: skip
    if dilated:
        kwargs["dilation"] = dilation
    _threads(draw)
    return dtype, _layout(draw, x), kwargs


def _valid_or_reject(op, x, kwargs):
    """Run validation; reject the rare draw (a dilated window wholly in the padding)."""
    try:
        return op(x, **kwargs)
    except ValueError as exc:
        assert "contain only padding" in str(exc), str(exc)
        assume(False)


@VALID
@given(case=pool_cases(dilated=True), data=st.data())
def test_max_pool2d_and_backward_compiled_equal_reference(case, data):
    dtype, x, kwargs = case
    with fastcnn.use_backend("numpy"):
        y_ref, idx_ref = _valid_or_reject(F.max_pool2d, x, kwargs)
    with fastcnn.use_backend("cython"):
        y, idx = F.max_pool2d(x, **kwargs)
    what = f"max_pool2d {x.shape} {kwargs}"
    assert y.dtype == dtype and idx.dtype == np.int64
    assert_array_equal(y, y_ref, err_msg=what)  # a max is exact, NaN included
    assert_array_equal(idx, idx_ref, err_msg=what)
    grad = _layout(data.draw, _values(data.draw, y.shape, dtype, special=False))
    got, expected = _on_both_backends(F.max_pool2d_backward, grad, idx, x.shape)
    _assert_close(got, expected, dtype, "max_pool2d_backward of " + what)


@st.composite
def avg_cases(draw):
    dtype, x, kwargs = draw(pool_cases(dilated=False))
    kwargs["count_include_pad"] = draw(st.booleans())
    kwargs["divisor_override"] = draw(st.none() | st.integers(1, 10))
    return dtype, x, kwargs


@VALID
@given(case=avg_cases(), data=st.data())
def test_avg_pool2d_and_backward_compiled_equal_reference(case, data):
    dtype, x, kwargs = case
    got, expected = _on_both_backends(F.avg_pool2d, x, **kwargs)
    what = f"avg_pool2d {x.shape} {kwargs}"
    _assert_close(got, expected, dtype, what)
    grad = _layout(data.draw, _values(data.draw, got.shape, dtype, special=False))
    got, expected = _on_both_backends(F.avg_pool2d_backward, grad, x.shape, **kwargs)
    _assert_close(got, expected, dtype, "avg_pool2d_backward of " + what)


# ---------------------------------------------------------------------------------------
# Invalid inputs: ValueError or TypeError, nothing else

HUGE = [2**31, 2**62, 2**63, 2**64, 2**100, -(2**63)]
BAD_INTS = st.sampled_from([0, -1, -7, *HUGE, np.int64(-2), np.uint64(2**63)])
BAD_TYPES = st.sampled_from(
    [
        1.5,
        2.0,
        float("nan"),
        float("inf"),
        "2",
        b"2",
        True,
        None,
        [],
        [1],
        [1, 2, 3],
        (1, 2.0),
        (1, None),
        ("a", "b"),
        {"h": 1},
        object(),
        np.float32(2),
        1j,
        np.array([1, 2]),
        np.array([[1, 2]]),
        (True, 1),
    ]  # fmt: skip
)
BAD_PARAM = BAD_INTS | BAD_TYPES | st.tuples(BAD_INTS, st.integers(1, 3))
BAD_ARRAY = st.sampled_from(
    [
        np.zeros((2, 3, 5, 5), np.int64),
        np.zeros((2, 3, 5, 5), np.float16),
        np.zeros((2, 3, 5, 5), np.complex128),
        np.zeros((2, 3, 5, 5), bool),
        np.zeros((3, 5, 5)),
        np.zeros((1, 2, 3, 5, 5)),
        np.zeros(()),
        np.array("x"),
        np.array([None, 1], dtype=object),
        np.zeros((2, 3, 5, 5), dtype=[("a", "f8")]),
        "not an array",
        None,
        [[1.0, 2.0], [3.0]],
    ]
)


def _must_reject_or_succeed(call):
    """A documented error, or (when the random value happened to be valid) a result."""
    try:
        call()
    except (ValueError, TypeError) as exc:
        event(f"raised {type(exc).__name__}")
    else:
        event("accepted (the value was valid after all)")


@st.composite
def invalid_conv_calls(draw):
    dtype = draw(DTYPES)
    x = np.ones((2, 4, 7, 6), dtype)
    weight = np.ones((6, 2, 3, 3), dtype)
    args = {"x": x, "weight": weight, "bias": np.ones(6, dtype), "stride": 1, "padding": 1,
            "dilation": 1, "groups": 2}  # fmt: skip
    target = draw(st.sampled_from(sorted(args)))
    if target in ("x", "weight", "bias"):
        args[target] = draw(
            BAD_ARRAY
            | st.just(np.ones((2, 4, 7, 6), np.float32 if dtype == np.float64 else np.float64))
            | st.just(np.ones((6,) if target != "bias" else (5,), dtype))
            | st.just(np.ones((6, 3, 3, 3), dtype))  # channel mismatch
            | st.just(np.ones((6, 2, 30, 3), dtype))  # kernel larger than the input
            | st.just(np.ones((0, 2, 3, 3), dtype))
        )
    elif target == "padding":
        args[target] = draw(BAD_PARAM | st.sampled_from(["full", "SAME ", "", "same"]))
        if isinstance(args[target], str) and args[target] == "same":
            args["stride"] = 2  # 'same' with a stride is refused
    elif target == "groups":
        args[target] = draw(BAD_PARAM | st.sampled_from([3, 4, 5, 7]))  # don't divide
    else:
        args[target] = draw(BAD_PARAM)
    return args


@INVALID
@given(args=invalid_conv_calls(), backend=st.sampled_from(["numpy", "cython"]))
def test_conv2d_invalid_arguments_raise(args, backend):
    with fastcnn.use_backend(backend):
        _must_reject_or_succeed(lambda: F.conv2d(**args))


@INVALID
@given(args=invalid_conv_calls(), grad=BAD_ARRAY | st.none(), backend=st.sampled_from(
    ["numpy", "cython"]))  # fmt: skip
def test_conv2d_backward_invalid_arguments_raise(args, grad, backend):
    args.pop("bias")
    if grad is None:  # a well-formed gradient, so the bad argument is what gets checked
        x, w = args["x"], args["weight"]
        grad = np.ones((2, 6, 7, 6), getattr(x, "dtype", np.float64))
        if not isinstance(w, np.ndarray) or not isinstance(x, np.ndarray):
            grad = np.ones((2, 6, 7, 6))
    with fastcnn.use_backend(backend):
        _must_reject_or_succeed(lambda: F.conv2d_backward(grad, **args))


@st.composite
def invalid_pool_calls(draw, avg: bool):
    args = {"x": np.ones((2, 3, 7, 6)), "kernel_size": 3, "stride": 2, "padding": 1,
            "ceil_mode": False}  # fmt: skip
    if avg:
        args.update(count_include_pad=True, divisor_override=None)
    else:
        args["dilation"] = 1
    target = draw(st.sampled_from(sorted(args)))
    if target == "x":
        args[target] = draw(BAD_ARRAY | st.just(np.ones((2, 3, 1, 1))))
    elif target == "padding":
        args[target] = draw(BAD_PARAM | st.sampled_from([2, 3, (0, 2), 10]))  # > kernel/2
    elif target == "ceil_mode":
        args[target] = draw(st.sampled_from([1, 0, "yes", None, 1.0, [True]]))
    elif target == "count_include_pad":
        return None  # any truthy value is accepted, as in PyTorch: nothing invalid to try
    else:
        args[target] = draw(BAD_PARAM | st.sampled_from([50, (1, 50), 2**31 - 1]))
    return args


@INVALID
@given(args=invalid_pool_calls(avg=False), backend=st.sampled_from(["numpy", "cython"]))
def test_max_pool2d_invalid_arguments_raise(args, backend):
    with fastcnn.use_backend(backend):
        _must_reject_or_succeed(lambda: F.max_pool2d(**args))


@INVALID
@given(args=invalid_pool_calls(avg=True), backend=st.sampled_from(["numpy", "cython"]))
def test_avg_pool2d_invalid_arguments_raise(args, backend):
    assume(args is not None)
    with fastcnn.use_backend(backend):
        _must_reject_or_succeed(lambda: F.avg_pool2d(**args))
        x = args.pop("x")
        shape = getattr(x, "shape", x)
        _must_reject_or_succeed(lambda: F.avg_pool2d_backward(np.ones((2, 3, 4, 3)), shape,
                                                              **args))  # fmt: skip


BAD_SHAPES = st.sampled_from(
    [
        (2, 3, 7),
        (2, 3, 7, 6, 1),
        (2, 3, -7, 6),
        (2, 3, 7.0, 6),
        "2367",
        None,
        (2**63, 1, 1, 1),
        (2, 3, 2**40, 2**40),
        (2, 3, 0, 0),
        (2, 3, 1, 1),
        (3, 3, 7, 6),
        np.zeros(4),
    ]  # fmt: skip
)


@INVALID
@given(
    which=st.sampled_from(["grad", "indices", "shape"]),
    grad=BAD_ARRAY,
    indices=st.sampled_from(
        [
            np.full((2, 3, 4, 3), 42),
            np.full((2, 3, 4, 3), -1),
            np.zeros((2, 3, 4, 3), float),
            np.zeros((2, 3, 4)),
            np.full((2, 3, 4, 3), 2**63 - 1),
            "idx",
            np.full((2, 3, 4, 3), 2**64 - 1, np.uint64),
        ]  # fmt: skip
    ),
    shape=BAD_SHAPES,
    backend=st.sampled_from(["numpy", "cython"]),
)
def test_max_pool2d_backward_invalid_arguments_raise(which, grad, indices, shape, backend):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    y, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    args = {"grad": y, "indices": idx, "shape": x.shape, which: locals()[which]}
    with fastcnn.use_backend(backend):
        _must_reject_or_succeed(
            lambda: F.max_pool2d_backward(args["grad"], args["indices"], args["shape"])
        )


# ---------------------------------------------------------------------------------------
# Valid but enormous: refused before any kernel runs

KERNELS = ["conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward"]  # fmt: skip

ENORMOUS = {
    # Tiny inputs whose outputs have 10**12 elements or more: no memory for them.
    "padding-2**20": ((1, 1, 1, 1), (1, 1, 1, 1), {"padding": 2**20}),
    "padding-2**31-1": ((1, 1, 1, 1), (1, 1, 1, 1), {"padding": 2**31 - 1}),
    "batch-x-channels-2**40": ((2**20, 1, 1, 1), (2**20, 1, 1, 1), {}),
    # An output plane of 2**32 - 1 elements (17 GB), past the kernels' 32-bit GEMM sizes:
    # a numpy allocation that succeeds lazily, so only validation can stop it.
    "plane-2**32": ((1, 1, 1, 1), (1, 1, 1, 1), {"padding": (2**31 - 1, 0)}),
}


@pytest.fixture
def kernels_must_not_run(monkeypatch):
    """Replace every kernel of both backends by one that fails the test if reached."""
    from fastcnn import _backend, _reference

    def reached(*args):
        raise AssertionError("a kernel was called: the sizes were not refused up front")

    for name in KERNELS:
        monkeypatch.setattr(_reference, name, reached)
        monkeypatch.setattr(_backend._compiled, name, reached)


@pytest.mark.parametrize("case", sorted(ENORMOUS))
@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_enormous_outputs_are_refused_before_any_kernel(case, backend, kernels_must_not_run):
    x_shape, w_shape, kwargs = ENORMOUS[case]
    x, w = np.ones(x_shape, np.float32), np.ones(w_shape, np.float32)
    with fastcnn.use_backend(backend), pytest.raises((ValueError, MemoryError)):
        F.conv2d(x, w, **kwargs)
