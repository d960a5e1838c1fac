"""Read what users give CNNClassifier: ``X``, labels, sample and class weights.

``X`` becomes the (n, C, H, W) batches the network takes, labels class indices, sample
and class weights one weight per sample.

:class:`EstimatorInput` is the part of :class:`fastcnn.CNNClassifier` that reads them:
flat rows (n, n_features), reshaped to ``image_shape``, a square or a strip; images (n, H, W),
(n, C, H, W) or, with ``data_format="channels_last"``, (n, H, W, C); as arrays, lists,
DataFrames or sparse matrices, which scikit-learn's checks handle (and record
``n_features_in_`` and ``feature_names_in_`` from). It also warns about input that is
likely a mistake: unscaled 8-bit images, channels-last images read channels-first. Labels
can be of any type (strings, non-contiguous integers); they are encoded to
0..n_classes-1 against ``classes_``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_X_y, column_or_1d, validate_data

from fastcnn._backend import FastCNNWarning
from fastcnn._validation import check_sample_weight, image_shape_of

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

_FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}
NO_Y = object()  # "no y given" (predict), as opposed to y=None passed to fit
_COLOR_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: the channel counts a channels-last image shows


def ndim_of(X: object) -> int:
    """Return the number of dimensions of ``X`` as an array (2 for what scikit-learn handles)."""
    if isinstance(X, np.ndarray):
        return X.ndim
    if hasattr(X, "iloc") or hasattr(X, "tocsr") or hasattr(X, "format"):
        return 2  # DataFrame or sparse: scikit-learn's checks deal with them
    try:
        return np.asarray(X).ndim
    except (TypeError, ValueError):  # e.g. ragged lists: let check_array report it
        return 2


def warn_if_channels_last(shape: tuple[int, ...]) -> None:
    """Warn when channels-first (n, C, H, W) input looks like channels-last (n, H, W, C).

    That is: the last axis is a colour-channel count, axis 1 is not, and read
    channels-first the images would be strips narrower than they are high (square
    feature maps, such as (n, 16, 4, 4), stay quiet).
    """
    axis1, height, last = shape[1], shape[2], shape[3]
    if last in _COLOR_CHANNELS and axis1 not in _COLOR_CHANNELS and min(axis1, height) > last:
        warnings.warn(
            f"X has shape {tuple(shape)}: its last axis looks like the colour channels of "
            f"(n, H, W, C) images, but data_format='channels_first' reads it as {axis1} "
            f"channels of {shape[2]}x{last} images; pass data_format='channels_last', or "
            "transpose X to (n, C, H, W)",
            FastCNNWarning,
            stacklevel=5,
        )


class EstimatorInput:
    """Mixin of :class:`fastcnn.CNNClassifier`: ``_validate_X``, ``_encode``, ``_sample_weights``.

    Reads the estimator's ``image_shape``, ``data_format``, ``rescale``, ``dtype``,
    ``class_weight`` and ``classes_``; sets ``image_shape_`` (and, through scikit-learn,
    ``n_features_in_``) when ``reset``.
    """

    image_shape: tuple[int, ...] | None
    data_format: str
    rescale: float | None
    dtype: Any
    class_weight: Any
    classes_: np.ndarray
    image_shape_: tuple[int, ...]
    n_features_in_: int

    @property
    def _np_dtype(self) -> np.dtype:
        dtype: np.dtype = np.dtype(_FLOAT_DTYPES.get(self.dtype, self.dtype))
        return dtype

    @overload
    def _validate_X(self, X: ArrayLike, *, reset: bool) -> np.ndarray: ...
    @overload
    def _validate_X(
        self, X: ArrayLike, y: ArrayLike | None, *, reset: bool
    ) -> tuple[np.ndarray, Any]: ...
    def _validate_X(
        self, X: ArrayLike, y: Any = NO_Y, *, reset: bool
    ) -> np.ndarray | tuple[np.ndarray, Any]:
        """Validate ``X`` (and ``y``); return X as (n, C, H, W) in the model dtype."""
        with_y = y is not NO_Y
        raw_dtype = getattr(X, "dtype", None)  # before conversion: 8-bit images, say
        ndim = ndim_of(X)
        if ndim <= 2:
            images, y, shape = self._flat_to_images(X, y, with_y, reset)
        elif ndim in (3, 4):
            images, y, shape = self._nd_to_images(X, y, with_y, reset)
        else:
            raise ValueError(
                "X must be 2-D (n_samples, n_features), 3-D (n_samples, H, W) or 4-D "
                f"(n_samples, C, H, W) or (n_samples, H, W, C), got an array with {ndim} "
                "dimensions"
            )
        if reset:
            self.image_shape_ = tuple(int(s) for s in shape)
            self._warn_if_unscaled(raw_dtype, images)
        if self.rescale is not None:
            images = images * images.dtype.type(self.rescale)  # a copy: X stays the user's
        images = np.ascontiguousarray(images)
        return (images, y) if with_y else images

    # X and y: anything scikit-learn's validation accepts (it returns arrays).
    def _flat_to_images(
        self, X: Any, y: Any, with_y: bool, reset: bool
    ) -> tuple[np.ndarray, Any, tuple[int, ...]]:
        # Tabular or flat images: scikit-learn's own checks, n_features_in_ and
        # feature_names_in_ included (they also reject 1-D X, sparse, NaN, ...).
        kwargs = {"reset": reset, "dtype": self._np_dtype, "order": "C"}
        if with_y:
            X, y = validate_data(self, X, y, **kwargs)
        else:
            X = validate_data(self, X, **kwargs)
        shape: tuple[int, ...]
        if reset:
            shape = image_shape_of(X.shape[1], self.image_shape, self.data_format)
        else:
            shape = self.image_shape_  # n_features was checked against n_features_in_
        if self.data_format == "channels_last":
            channels, height, width = shape
            images = X.reshape(X.shape[0], height, width, channels).transpose(0, 3, 1, 2)
        else:
            images = X.reshape(X.shape[0], *shape)
        return images, y, shape

    def _nd_to_images(
        self, X: Any, y: Any, with_y: bool, reset: bool
    ) -> tuple[np.ndarray, Any, tuple[int, ...]]:
        kwargs = {"allow_nd": True, "dtype": self._np_dtype, "order": "C"}
        if not with_y:
            X = check_array(X, **kwargs)
        elif y is None:
            raise ValueError(
                f"This {type(self).__name__} estimator requires y to be passed, but the "
                "target y is None."
            )
        else:
            X, y = check_X_y(X, y, **kwargs)
        if X.ndim == 3:
            images = X[:, None]
        elif self.data_format == "channels_last":
            images = X.transpose(0, 3, 1, 2)
        else:
            images = X
            if reset:
                warn_if_channels_last(X.shape)
        shape = images.shape[1:]
        if reset:
            self.n_features_in_ = int(np.prod(shape))
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif tuple(shape) != tuple(self.image_shape_):
            raise ValueError(
                f"X has images of shape {tuple(shape)} (as (C, H, W)), but "
                f"{type(self).__name__} was fitted on images of shape "
                f"{tuple(self.image_shape_)}{self._one_image_hint(X.shape)}"
            )
        return images, y, shape

    def _one_image_hint(self, shape: tuple[int, ...]) -> str:
        """Advice for one image given without its batch axis (``clf.predict(X[0])``)."""
        channels, height, width = self.image_shape_
        if self.data_format == "channels_last":
            one = (height, width, channels)
        else:
            one = (channels, height, width)
        if tuple(shape) != one:
            return ""
        return (
            f"; X looks like one image of shape {one}: add the batch axis, e.g. X[None] "
            "(or X[np.newaxis]), to pass a batch of one"
        )

    def _warn_if_unscaled(self, raw_dtype: object, images: np.ndarray) -> None:
        if self.rescale is not None or raw_dtype not in (np.uint8, np.uint16):
            return
        high = float(images.max()) if images.size else 0.0
        if high > 1:
            warnings.warn(
                f"X is {np.dtype(raw_dtype).name} with values up to {high:g} and "
                f"rescale=None, so {type(self).__name__} trains on the raw values, which "
                "slows or stops learning; pass rescale=1/255 (or 1/max) to scale the "
                "input to [0, 1]",
                FastCNNWarning,
                stacklevel=4,
            )

    def _encode(self, y: ArrayLike) -> np.ndarray:
        labels: np.ndarray = column_or_1d(y, warn=True)
        check_classification_targets(labels)
        classes = self.classes_
        encoded = np.searchsorted(classes, labels)
        encoded = np.clip(encoded, 0, len(classes) - 1)
        unknown = classes[encoded] != labels
        if np.any(unknown):
            raise ValueError(
                f"y contains labels not seen in the first fit/partial_fit call: "
                f"{np.unique(labels[unknown])[:10].tolist()}; the known classes are "
                f"{classes[:20].tolist()}"
            )
        return encoded.astype(np.intp)

    def _sample_weights(
        self, sample_weight: ArrayLike | None, y_encoded: np.ndarray
    ) -> np.ndarray | None:
        """Each sample's weight: ``sample_weight`` times its class's weight, or None."""
        n = y_encoded.shape[0]
        weights = None if sample_weight is None else check_sample_weight(sample_weight, n)
        if self.class_weight is None:
            return weights
        per_class = np.ones(len(self.classes_))
        if isinstance(self.class_weight, dict):
            for label, value in self.class_weight.items():
                named = self.classes_ == label
                if not np.any(named):
                    raise ValueError(
                        f"class_weight has a weight for {label!r}, which is not one of the "
                        f"classes {self.classes_[:20].tolist()}"
                    )
                per_class[named] = value
        else:  # 'balanced', scikit-learn's formula over the classes y holds
            counts = np.bincount(y_encoded, minlength=len(self.classes_))
            present = counts > 0
            per_class[present] = n / (np.count_nonzero(present) * counts[present])
        by_sample = per_class[y_encoded]
        if weights is not None:
            by_sample *= weights
        checked: np.ndarray = check_sample_weight(by_sample, n)  # also the dict's values
        return checked
