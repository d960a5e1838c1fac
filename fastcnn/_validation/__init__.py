"""Every argument check and output-size formula of the package, in one place.

functional, the layers, the model and its training loop, the losses, the optimizers, the
estimator and the plots use these. The modules split them by what they check: ``arrays``
(arrays, dtypes, int pairs, output-size formulas), ``scalars`` (numbers, flags, ints,
generators), ``ops`` (the arguments of each op), ``data`` (the samples and targets given
to a model) and ``estimator`` (``CNNClassifier``'s hyper-parameters). This package
re-exports every name, so callers import from ``fastcnn._validation`` alone.

Each check returns the normalized value or raises TypeError/ValueError naming the
argument, what was expected and what was received. Everything here runs once per call,
before any kernel: a kernel only ever sees C-contiguous float32/float64 arrays and plain,
already-checked ints.
"""

from __future__ import annotations

from fastcnn._validation.arrays import (
    FLOAT_DTYPES,
    MAX_BLAS_DIM,
    MAX_ELEMENTS,
    IntPair,
    RngLike,
    as_float_array,
    check_size,
    contiguous,
    conv2d_output_hw,
    conv_output_size,
    conv_padding,
    is_int,
    pair,
    pool2d_output_hw,
    pool_output_size,
    same_dtype,
    short_repr,
)
from fastcnn._validation.data import (
    check_X,
    check_y,
)
from fastcnn._validation.estimator import (
    check_estimator_params,
    image_shape_of,
)
from fastcnn._validation.ops import (
    ConvArgs,
    PoolArgs,
    check_batch_input,
    check_bias,
    check_channel_vector,
    check_conv,
    check_divisor,
    check_grad_out,
    check_input_shape,
    check_labels,
    check_linear,
    check_logits,
    check_max_pool_indices,
    check_param_pairs,
    check_pool,
    check_sample_weight,
    check_state_arrays,
    check_step_lists,
    pool_window,
    windows_touch_input,
)
from fastcnn._validation.scalars import (
    check_bool,
    check_dtype,
    check_finite_float,
    check_float,
    check_int,
    check_number,
    check_positive_int,
    check_rng,
)

__all__ = [
    "ConvArgs",
    "FLOAT_DTYPES",
    "IntPair",
    "MAX_BLAS_DIM",
    "MAX_ELEMENTS",
    "PoolArgs",
    "RngLike",
    "as_float_array",
    "check_X",
    "check_batch_input",
    "check_bias",
    "check_bool",
    "check_channel_vector",
    "check_conv",
    "check_divisor",
    "check_dtype",
    "check_estimator_params",
    "check_finite_float",
    "check_float",
    "check_grad_out",
    "check_input_shape",
    "check_int",
    "check_labels",
    "check_linear",
    "check_logits",
    "check_max_pool_indices",
    "check_number",
    "check_param_pairs",
    "check_pool",
    "check_positive_int",
    "check_rng",
    "check_sample_weight",
    "check_size",
    "check_state_arrays",
    "check_step_lists",
    "check_y",
    "contiguous",
    "conv2d_output_hw",
    "conv_output_size",
    "conv_padding",
    "image_shape_of",
    "is_int",
    "pair",
    "pool2d_output_hw",
    "pool_output_size",
    "pool_window",
    "same_dtype",
    "short_repr",
    "windows_touch_input",
]
