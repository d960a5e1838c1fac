"""``CNNClassifier``: a fastcnn model behind scikit-learn's estimator API.

It follows scikit-learn's conventions (see ``sklearn.neural_network.MLPClassifier``, whose
parameter names it reuses): ``__init__`` only stores its arguments, everything is
validated in ``fit``, learned attributes end in ``_``, ``fit`` returns ``self``. So it
works in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV`` (also with ``n_jobs``: a
fitted estimator pickles, weights included), and passes ``check_estimator``.

Input can be images or flat rows, labels of any type (see ``fastcnn._estimator_input``,
which reads them); the network is a ``Sequential`` trained by its ``fit``.

This module imports scikit-learn; ``fastcnn`` itself imports it only on first use of
``fastcnn.CNNClassifier``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

import fastcnn
from fastcnn import _threads, models
from fastcnn._estimator_input import EstimatorInput
from fastcnn._validation import check_estimator_params
from fastcnn.callbacks import Callback
from fastcnn.graph import Model
from fastcnn.layers import BatchNorm2D, Layer
from fastcnn.model import BaseModel, Sequential
from fastcnn.optim import SGD, Adam, CosineAnnealingLR, Optimizer

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["CNNClassifier"]

# A callable architecture: (input_shape (C, H, W), n_classes) -> a model or its layers.
Architecture = Callable[[tuple[int, ...], int], "BaseModel | Sequence[Layer]"]

_ARCHITECTURES: dict[str, Callable[..., Sequential]] = {
    "digits_cnn": models.digits_cnn,
    "lenet5": models.lenet5,
}


def _seed(random_state: object) -> int:
    """One int seed from scikit-learn's ``random_state`` (None, int or RandomState)."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _dask_worker_share() -> int | None:
    """Return the cores per task slot inside a dask ``distributed`` worker's task, else None.

    A worker runs up to ``nthreads`` tasks at once, and workers started in-process
    (``LocalCluster(processes=False)``) share this process's cores, so each task gets the
    cores divided by all the slots here. Worker processes started by a nanny also get
    ``OMP_NUM_THREADS=1`` (distributed's ``distributed.nanny.pre-spawn-environ``), which
    fastcnn's default honours: the lower of the two wins.
    """
    distributed = sys.modules.get("distributed")  # never import it: no worker without it
    if distributed is None:
        return None
    try:
        worker = distributed.get_worker()
    except (ValueError, AttributeError):  # not inside a worker's task
        return None
    workers = list(getattr(type(worker), "_instances", ())) or [worker]
    # The task slots: WorkerState.nthreads (distributed >= 2022.11), else Worker.nthreads.
    slots = sum(
        max(1, int(getattr(getattr(w, "state", w), "nthreads", None) or 1)) for w in workers
    )
    return max(1, _cores() // slots)


def _task_threads() -> contextlib.AbstractContextManager[None]:
    """Return the thread context for fit and predict.

    Inside a dask worker's task, fastcnn's default thread count is capped at the task's
    share of the cores (no oversubscription); elsewhere, and after
    ``fastcnn.set_num_threads``, nothing changes.
    """
    share = _dask_worker_share()
    if share is None:
        return contextlib.nullcontext()
    return _threads.limit_default_threads(share)


class _TrainingMonitor(Callback):
    """Count epochs without improvement and keep the best weights, for ``fit``.

    The rule is ``MLPClassifier``'s: with a validation set, an epoch improves when the
    validation accuracy beats the best so far by more than ``tol``; without, when the
    training loss drops below the best so far by more than ``tol``. Training stops after
    ``n_iter_no_change`` epochs without improvement.
    """

    def __init__(self, estimator: CNNClassifier, use_validation: bool) -> None:
        super().__init__()
        self.estimator = estimator
        self.use_validation = use_validation
        self.best_state: dict[str, np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> bool:
        """Update the estimator's scores and counters; True stops training."""
        assert logs is not None, "fit passes the epoch's logs"
        est = self.estimator
        tol = est.tol
        if self.use_validation:
            # fit sets both before it trains with a validation set
            assert est.validation_scores_ is not None and est.best_validation_score_ is not None
            score = logs["val_accuracy"]
            est.validation_scores_.append(score)
            if score < est.best_validation_score_ + tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_state = self.model.state_dict()
        else:
            loss = logs["loss"]
            best = np.inf if est.best_loss_ is None else est.best_loss_
            if loss > best - tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(best, loss)
        est.loss_curve_.append(logs["loss"])
        est.n_iter_ += 1
        return est._no_improvement_count >= est.n_iter_no_change


# scikit-learn is untyped (its classes are Any to mypy); an estimator must subclass them.
class CNNClassifier(EstimatorInput, ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Convolutional neural network classifier, trained with fastcnn's compiled kernels.

    Parameters
    ----------
    architecture : {'digits_cnn', 'lenet5'}, callable, Sequential, Model or list of Layer, \
default='digits_cnn'
        The network. ``'digits_cnn'`` (:func:`fastcnn.models.digits_cnn`) adapts to any
        input size, including 1-row strips of tabular features; ``'lenet5'``
        (:func:`fastcnn.models.lenet5`) needs images of at least 16x16. A callable is
        called as ``architecture(input_shape, n_classes)`` with ``input_shape = (C, H, W)``
        and returns a ``Sequential``, a graph :class:`~fastcnn.Model` or a list of layers.
        A ``Sequential``, a ``Model`` or a list of layers is used as given. Whatever the
        source, ``fit`` works on a copy and re-initializes every parameter from
        ``random_state``; the model must output ``n_classes`` logits.
    image_shape : (H, W), (C, H, W) or (H, W, C), default=None
        Shape of one image when ``X`` is given flat, as (n_samples, C * H * W); a 3-tuple
        is in ``data_format`` order. None: square images (1, s, s) when
        ``n_features == s * s``, else (1, 1, n_features). Ignored for image-shaped ``X``.
        Flat input with ``image_shape`` is also the way to train on dask arrays with
        dask-ml's ``Incremental`` and ``ParallelPostFit``, which expect 2-D arrays.
    data_format : {'channels_first', 'channels_last'}, default='channels_first'
        Axis order of 4-D ``X`` (and of a 3-tuple ``image_shape``): (n, C, H, W), as
        PyTorch and fastcnn's layers take it, or (n, H, W, C), as Keras, PIL and
        scikit-image give it; channels-last input is transposed once to the network's
        (n, C, H, W). With 'channels_first', ``fit`` warns (``FastCNNWarning``) when the
        last axis of 4-D ``X`` looks like colour channels (1, 3 or 4) and axis 1 does not:
        such images would be read as axis-1 channels of thin strips.
    rescale : float or None, default=None
        Factor the input is multiplied by, after conversion to ``dtype``, in ``fit`` and
        at prediction, e.g. ``1/255`` for 8-bit images in 0..255 (networks train best on
        inputs of order 1). None leaves the values as they are; ``fit`` then warns
        (``FastCNNWarning``) on uint8 or uint16 input with values above 1.
    max_iter : int, default=15
        Number of epochs (passes over the training data) in ``fit``; fewer when the
        stopping rule below ends training early.
    batch_size : int, default=64
        Samples per gradient step (capped at the number of training samples).
    optimizer : {'adam', 'sgd'}, default='adam'
    learning_rate_init : float, default=3e-3
    learning_rate : {'cosine', 'constant'}, default='cosine'
        Schedule in ``fit``: cosine decay from ``learning_rate_init`` to 0 over
        ``max_iter`` epochs, or constant. ``partial_fit`` always uses the constant rate.
    momentum : float, default=0.9
        Momentum of ``optimizer='sgd'`` (Nesterov).
    alpha : float, default=0.0
        L2 penalty (weight decay) on the parameters.
    class_weight : dict, 'balanced' or None, default=None
        Weight of each class's samples in the loss, ``{label: weight}`` (classes not
        named weigh 1); 'balanced' gives ``n_samples / (n_classes * np.bincount(y))``, as
        scikit-learn computes it, and is not available to ``partial_fit``. Multiplies
        the ``sample_weight`` of ``fit``.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when the
        validation accuracy has not improved by ``tol`` for ``n_iter_no_change`` epochs,
        and keep the weights of the best epoch.
    validation_fraction : float, default=0.1
        Used only with ``early_stopping``; in (0, 1).
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping. Without ``early_stopping`` the
        training loss is watched instead.
    tol : float, default=1e-4
        Minimum improvement of the watched score.
    shuffle : bool, default=True
        Reshuffle the training samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffling, the dropout masks and the validation
        split. With an int, results are reproducible, and the same on both backends up
        to floating-point rounding.
    verbose : int, default=0
        0 silent, 1 a progress bar per epoch, 2 one line per epoch (on stderr).
    warm_start : bool, default=False
        Continue from the previous ``fit`` (same classes and input shape) instead of
        starting over. The optimizer starts afresh; ``loss_curve_`` and ``n_iter_`` keep
        counting.
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the weights and of the computation.
    backend : {'cython', 'numpy'} or None, default=None
        Backend for fit and predict; None uses the active one (:func:`fastcnn.get_backend`).
        It applies to the thread that calls them only (:func:`fastcnn.use_backend`):
        other threads keep their own backend meanwhile.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    model_ : fastcnn.Sequential or fastcnn.Model
        The trained network (input (N, C, H, W), output n_classes logits).
    image_shape_ : tuple of int
        (C, H, W) of the network input.
    n_features_in_ : int
        Values per sample, C * H * W.
    feature_names_in_ : ndarray of shape ``(n_features_in_,)``
        Column names, when fit on a DataFrame with string column names.
    loss_curve_ : list of float
        Mean training loss of every epoch.
    best_loss_ : float
        Lowest training loss seen (without ``early_stopping``; else None).
    validation_scores_ : list of float or None
        Validation accuracy of every epoch (with ``early_stopping``).
    best_validation_score_ : float or None
        Best of ``validation_scores_``.
    n_iter_ : int
        Number of epochs run.
    t_ : int
        Number of training samples seen (counting repeats across epochs).

    Examples
    --------
    >>> from fastcnn import CNNClassifier
    >>> from fastcnn.datasets import load_digits
    >>> X, y = load_digits()
    >>> clf = CNNClassifier(max_iter=2, random_state=0).fit(X[:500], y[:500])
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    # Learned in fit (scikit-learn's convention: the names end in "_"); declared here
    # for the type checker only, so that hasattr and check_is_fitted are unchanged.
    classes_: np.ndarray
    model_: BaseModel
    image_shape_: tuple[int, ...]
    n_features_in_: int
    loss_curve_: list[float]
    validation_scores_: list[float] | None
    best_validation_score_: float | None
    best_loss_: float | None
    n_iter_: int
    t_: int
    _no_improvement_count: int
    _optimizer: Optimizer | None

    def __init__(
        self,
        architecture: str | Architecture | Sequential | Sequence[Layer] = "digits_cnn",
        *,
        image_shape: tuple[int, ...] | None = None,
        data_format: str = "channels_first",
        rescale: float | None = None,
        max_iter: int = 15,
        batch_size: int = 64,
        optimizer: str = "adam",
        learning_rate_init: float = 3e-3,
        learning_rate: str = "cosine",
        momentum: float = 0.9,
        alpha: float = 0.0,
        class_weight: dict[Any, float] | str | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        shuffle: bool = True,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        warm_start: bool = False,
        dtype: str = "float32",
        backend: str | None = None,
    ) -> None:
        self.architecture = architecture
        self.image_shape = image_shape
        self.data_format = data_format
        self.rescale = rescale
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.learning_rate_init = learning_rate_init
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.alpha = alpha
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.shuffle = shuffle
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.dtype = dtype
        self.backend = backend

    # -- scikit-learn plumbing ----------------------------------------------------------

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (n, H, W) images; (n, C, H, W) as well
        return tags

    # -- parameter checks ---------------------------------------------------------------

    def _check_params(self) -> None:
        check_estimator_params(self.get_params(deep=False), fastcnn.available_backends())
        arch = self.architecture
        if isinstance(arch, str):
            if arch not in _ARCHITECTURES:
                raise ValueError(
                    f"architecture must be one of {list(_ARCHITECTURES)}, got {arch!r}"
                )
        elif not (
            callable(arch)
            or isinstance(arch, BaseModel)
            or (
                isinstance(arch, list | tuple)
                and arch
                and all(isinstance(layer, Layer) for layer in arch)
            )
        ):
            raise ValueError(
                f"architecture must be one of {list(_ARCHITECTURES)}, a callable, a "
                f"fastcnn Sequential or Model, or a non-empty list of fastcnn layers, got "
                f"{arch!r}"
            )

    # -- the network --------------------------------------------------------------------

    def _build_model(self, n_classes: int, rng: np.random.Generator) -> BaseModel:
        arch, shape, dtype = self.architecture, self.image_shape_, self._np_dtype
        if isinstance(arch, str):
            channels, height, width = shape
            return _ARCHITECTURES[arch](
                n_classes,
                channels,
                input_size=(height, width),
                dtype=dtype,
                random_state=rng,
            )
        built: object
        if isinstance(arch, Model):
            built = copy.deepcopy(arch)  # never train the user's objects
        elif isinstance(arch, Sequential) or isinstance(arch, list | tuple):
            built = copy.deepcopy(list(arch))
        else:
            assert callable(arch), "_check_params accepts no other architecture"
            built = arch(shape, n_classes)
            if isinstance(built, Sequential):
                built = list(built.layers)
            if not isinstance(built, Model | list | tuple) or (
                not isinstance(built, Model)
                and not all(isinstance(layer, Layer) for layer in built)
            ):
                raise ValueError(
                    "architecture(input_shape, n_classes) must return a fastcnn Sequential, "
                    f"a fastcnn Model or a list of fastcnn layers, got {type(built).__name__}"
                )
        if isinstance(built, Model):  # each layer once, in the order they run
            built_layers = list(dict.fromkeys(layer for layer, _, _ in built.layer_calls()))
        else:
            built_layers = list(built)
        self._reset_layers(built_layers, rng)
        model = built if isinstance(built, Model) else Sequential(list(built))
        try:
            out = model.output_shape(shape)
        except ValueError as exc:
            raise ValueError(
                f"architecture does not accept input of shape {shape}: {exc}"
            ) from None
        if out != (n_classes,):
            raise ValueError(
                f"architecture must output {n_classes} logits (one per class) for input "
                f"of shape {shape}, but outputs shape {out}"
            )
        return model

    def _reset_layers(self, layers: list[Layer], rng: np.random.Generator) -> None:
        """Check each layer's dtype, then re-initialize it from ``rng`` (seeded)."""
        dtype = self._np_dtype
        for layer in layers:
            if layer.dtype is not None and layer.dtype != dtype:
                raise ValueError(
                    f"architecture layer {layer!r} has dtype {layer.dtype}, but dtype="
                    f"{self.dtype!r}; build the layers with dtype={dtype.name!r} or set "
                    f"dtype={layer.dtype.name!r}"
                )
            layer.reset_parameters(rng)  # seeded, whatever the layers were built with
            if layer.reseeds:  # Dropout, the augmentation layers: each has an rng
                cast(Any, layer).rng = np.random.default_rng(rng.integers(2**63))

    def _make_optimizer(self) -> Optimizer:
        if self.optimizer == "adam":
            return Adam(self.learning_rate_init, weight_decay=self.alpha)
        return SGD(
            self.learning_rate_init,
            momentum=self.momentum,
            nesterov=self.momentum > 0,
            weight_decay=self.alpha,
        )

    def _backend_context(self) -> contextlib.AbstractContextManager[object]:
        if self.backend is None:
            return contextlib.nullcontext()
        return fastcnn.use_backend(self.backend)

    # -- training -----------------------------------------------------------------------

    def _initialize(
        self, y: ArrayLike, classes: ArrayLike | None, rng: np.random.Generator
    ) -> None:
        """Set classes_ and build a fresh network (first fit, or fit without warm_start)."""
        labels = column_or_1d(y, warn=True) if classes is None else np.asarray(classes)
        check_classification_targets(labels)
        self.classes_ = np.unique(labels)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes to learn; got 1 "
                f"class: {self.classes_.tolist()}"
            )
        self.model_ = self._build_model(len(self.classes_), rng)
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.t_ = 0
        self.best_loss_ = np.inf
        self.validation_scores_ = None
        self.best_validation_score_ = None
        self._optimizer = None

    def _effective_batch_size(self, n: int) -> int:
        batch_size = min(self.batch_size, n)
        # BatchNorm cannot normalize a single value per channel, which a final batch of
        # one sample would give it where the feature maps are 1x1 (tiny images): avoid that.
        one_by_one = any(
            isinstance(layer, BatchNorm2D) and shape[1] * shape[2] == 1
            for layer, shape, _ in self.model_.layer_calls(self.image_shape_)
        )
        if one_by_one and n > 1:
            while n % batch_size == 1:
                batch_size += 1
        return batch_size

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> CNNClassifier:
        """Train the network on ``(X, y)`` for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n_samples, H, W), \
(n_samples, C, H, W) or (n_samples, H, W, C)
            Flat rows are reshaped to images as described for ``image_shape``; 4-D
            images are read in ``data_format`` order.
        y : array-like of shape (n_samples,)
            Class labels of any type.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample's loss (scikit-learn's convention;
            multiplied by ``class_weight``). The training loss is the weighted mean
            ``sum(w * loss) / sum(w)``; with ``batch_size >= n_samples`` an integer weight
            acts as repeating the sample (in smaller batches, in expectation). The
            validation score of ``early_stopping`` is unweighted.

        Returns
        -------
        self : CNNClassifier

        Raises
        ------
        KeyboardInterrupt
            On Ctrl-C, after the current batch: the estimator is left fitted with the
            network trained so far (it predicts and can be fitted again), and the
            interrupt goes on to the caller, so that a grid search or pipeline stops
            instead of scoring a half-trained model.
        """
        return self._fit(X, y, classes=None, incremental=False, sample_weight=sample_weight)

    def partial_fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        classes: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> CNNClassifier:
        """One epoch over ``(X, y)``, continuing from the current state.

        Parameters
        ----------
        X : array-like
            As for :meth:`fit`.
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            All the classes that will ever appear in ``y``; required on the first call
            (when the estimator is not fitted yet), ignored afterwards.
        sample_weight : array-like of shape (n_samples,), default=None
            As for :meth:`fit`.

        Returns
        -------
        self : CNNClassifier
        """
        if not hasattr(self, "classes_") and classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit (all the labels "
                "y will ever contain)"
            )
        return self._fit(X, y, classes=classes, incremental=True, sample_weight=sample_weight)

    def _fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        classes: ArrayLike | None,
        incremental: bool,
        sample_weight: ArrayLike | None = None,
    ) -> CNNClassifier:
        self._check_params()
        if incremental and isinstance(self.class_weight, str):
            raise ValueError(
                "class_weight='balanced' is not available to partial_fit, which sees one "
                "chunk of the data at a time; pass the weights as a dict {label: weight}, "
                "computed once with sklearn.utils.class_weight.compute_class_weight"
            )
        continuing = hasattr(self, "model_") and (incremental or self.warm_start)
        X, y = self._validate_X(X, y, reset=not continuing)
        seed = _seed(self.random_state)
        rng = np.random.default_rng(seed)
        if not continuing:
            self._initialize(y, classes, rng)
        elif not incremental:
            self._check_warm_start_classes(y)
        y_encoded = self._encode(y)
        weights = self._sample_weights(sample_weight, y_encoded)
        validation: tuple[np.ndarray, np.ndarray] | None = None
        if self.early_stopping and not incremental:
            X, X_val, y_encoded, y_val, weights = self._validation_split(
                X, y_encoded, weights, seed
            )
            validation = (X_val, y_val)
            if self.validation_scores_ is None:  # first fit with early stopping
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
                self.best_loss_ = None
        optimizer = self._optimizer if incremental else None
        if optimizer is None:
            optimizer = self._make_optimizer()
        self._train(X, y_encoded, weights, validation, optimizer, incremental, rng)
        return self

    def _check_warm_start_classes(self, y: ArrayLike) -> None:
        """Refuse a warm start on labels the network has no output for."""
        labels = np.unique(column_or_1d(y, warn=True))
        if not np.all(np.isin(labels, self.classes_)):
            raise ValueError(
                f"warm_start can only be used where y has the same classes as in the "
                f"previous call to fit; previous classes {self.classes_.tolist()}, "
                f"y has {labels.tolist()}"
            )

    def _train(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None,
        validation: tuple[np.ndarray, np.ndarray] | None,
        optimizer: Optimizer,
        incremental: bool,
        rng: np.random.Generator,
    ) -> None:
        """Run the model's fit with the schedule and the stopping rule as callbacks."""
        epochs = 1 if incremental else self.max_iter
        callbacks: list[Callback | CosineAnnealingLR] = []
        if not incremental and self.learning_rate == "cosine":
            callbacks.append(CosineAnnealingLR(optimizer, T_max=epochs))
        monitor = _TrainingMonitor(self, use_validation=validation is not None)
        self._no_improvement_count = 0
        callbacks.append(monitor)
        n_before = self.n_iter_
        with self._backend_context(), _task_threads():
            history = self.model_.fit(X, y, epochs=epochs,
                batch_size=self._effective_batch_size(X.shape[0]), optimizer=optimizer,
                validation_data=validation, shuffle=bool(self.shuffle),
                random_state=int(rng.integers(2**31)), verbose=int(self.verbose),
                callbacks=callbacks, sample_weight=weights)  # fmt: skip
        self.t_ += X.shape[0] * (self.n_iter_ - n_before)
        if monitor.best_state is not None:
            self.model_.load_state_dict(monitor.best_state)
        self._optimizer = optimizer
        if history.interrupted:
            # Usable, as scikit-learn's MLP and Keras leave it, but never taken for a
            # finished fit: a search or pipeline around it must stop too.
            raise KeyboardInterrupt(
                f"{type(self).__name__}.fit was interrupted after {self.n_iter_} epoch(s); "
                "the estimator holds the network trained so far"
            )

    def _validation_split(
        self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        from sklearn.model_selection import train_test_split

        index = np.arange(X.shape[0])
        try:
            train, val = train_test_split(
                index, test_size=self.validation_fraction, random_state=seed, stratify=y
            )
        except ValueError:  # a class too small to stratify: split at random
            train, val = train_test_split(
                index, test_size=self.validation_fraction, random_state=seed
            )
        if train.shape[0] < 1 or val.shape[0] < 1:
            raise ValueError(
                f"early_stopping with validation_fraction={self.validation_fraction} needs "
                f"more than {X.shape[0]} sample(s)"
            )
        train_weights = None if weights is None else weights[train]
        return X[train], X[val], y[train], y[val], train_weights

    # -- inference ----------------------------------------------------------------------

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), the model dtype
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        with self._backend_context(), _task_threads():
            return self.model_.predict_proba(X)

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Logarithm of :meth:`predict_proba` (computed stably from the logits)."""
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        with self._backend_context(), _task_threads():
            logits = self.model_.decision_function(X)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_proba: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return log_proba

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Most probable class of each sample, as labels from ``classes_``."""
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        with self._backend_context(), _task_threads():
            labels: np.ndarray = self.classes_[self.model_.predict(X)]
            return labels
