"""Scale-out on dask: a real ``distributed.LocalCluster`` with two worker processes.

The results on the cluster must equal the serial ones: dask-ml's ``Incremental`` (one
``partial_fit`` per chunk), ``ParallelPostFit`` (predict chunk by chunk) and a grid
search through ``joblib.parallel_backend("dask")``. The workers run one fastcnn thread
per task (distributed's nanny exports ``OMP_NUM_THREADS=1``), so the serial runs here use
one thread too: float32 results then agree bit for bit. The recipe these tests follow is
docs/guide/scaling_out.rst.
"""

import os

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

import fastcnn
from fastcnn import CNNClassifier
from fastcnn.datasets import load_digits
from fastcnn.layers import Conv2D, Dense, Flatten, ReLU

distributed = pytest.importorskip(
    "distributed", reason="dask is optional: pip install 'fastcnn[dask]' to test scale-out"
)
da = pytest.importorskip("dask.array", reason="dask[array] is optional (fastcnn[dask])")
wrappers = pytest.importorskip("dask_ml.wrappers", reason="dask-ml is optional (fastcnn[dask])")
joblib = pytest.importorskip("joblib")

CHUNK = 100


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def one_thread():
    """The serial reference runs on one thread, as each worker task does."""
    fastcnn.set_num_threads(1)
    yield
    fastcnn.set_num_threads(None)


@pytest.fixture(scope="module")
def data():
    """400 digits as (n, C, H, W) and as the flat (n, C*H*W) dask array dask-ml takes,
    chunked along the samples only."""
    X, y = load_digits()
    X, y = X[:400], y[:400]
    X_dask = da.from_array(X, chunks=(CHUNK, -1, -1, -1))
    flat = X_dask.reshape(len(X), -1)  # no data moves: each chunk is reshaped where it is
    assert flat.chunks[0] == X_dask.chunks[0]
    return X, y, flat, da.from_array(y, chunks=CHUNK)


def _parameters(clf):
    return [p for p, _ in clf.model_.parameters()]


def test_incremental_equals_serial_partial_fit(client, data, one_thread):
    X, y, X_flat, y_dask = data
    classes = np.unique(y)
    make = lambda: CNNClassifier(image_shape=X.shape[1:], random_state=0)  # noqa: E731
    incremental = wrappers.Incremental(make(), shuffle_blocks=False)
    incremental.fit(X_flat, y_dask, classes=classes)
    serial = make()
    for lo in range(0, len(X), CHUNK):
        serial.partial_fit(X[lo : lo + CHUNK], y[lo : lo + CHUNK], classes=classes)
    fitted = incremental.estimator_
    assert fitted.t_ == serial.t_ == len(X) and fitted.image_shape_ == (1, 8, 8)
    for a, b in zip(_parameters(fitted), _parameters(serial), strict=True):
        np.testing.assert_array_equal(a, b)


def test_parallel_post_fit_equals_predict(client, data, one_thread):
    X, y, X_flat, _ = data
    clf = CNNClassifier(max_iter=2, random_state=0).fit(X, y)
    wrapped = wrappers.ParallelPostFit(clf)
    labels = wrapped.predict(X_flat)
    proba = wrapped.predict_proba(X_flat)
    assert isinstance(labels, da.Array) and labels.chunks == (X_flat.chunks[0],)
    assert proba.chunks == (X_flat.chunks[0], (10,))
    serial = [clf.predict_proba(X[lo : lo + CHUNK]) for lo in range(0, len(X), CHUNK)]
    np.testing.assert_array_equal(proba.compute(), np.concatenate(serial))
    np.testing.assert_array_equal(labels.compute(), clf.predict(X))
    assert wrapped.score(X_flat, data[3]) == pytest.approx(clf.score(X, y))


def test_grid_search_on_the_cluster_equals_serial(client, data, one_thread):
    X, y, _, _ = data
    grid = {"learning_rate_init": [1e-3, 1e-2], "batch_size": [32, 64]}
    search = lambda: GridSearchCV(  # noqa: E731
        CNNClassifier(max_iter=2, random_state=0), grid, cv=2, n_jobs=-1
    )
    with joblib.parallel_backend("dask"):
        on_cluster = search().fit(X[:300], y[:300])
    serial = search().set_params(n_jobs=1).fit(X[:300], y[:300])
    assert on_cluster.best_params_ == serial.best_params_
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(on_cluster.cv_results_[key], serial.cv_results_[key])


def test_worker_processes_run_one_fastcnn_thread_per_task(client):
    # distributed's nanny exports OMP_NUM_THREADS=1 to the worker processes it starts;
    # fastcnn's default thread count honours it.
    counts = client.run(fastcnn.get_num_threads)
    assert list(counts.values()) == [1, 1]


_seen_threads: list[int] = []


class _RecordThreads(ReLU):
    """ReLU that notes the fastcnn thread count it runs with."""

    def forward(self, x, training=False):
        _seen_threads.append(fastcnn.get_num_threads())
        return super().forward(x, training)


def _fit_and_predict(X, y):
    layers = [Conv2D(1, 4, 3, padding=1), _RecordThreads(), Flatten(), Dense(256, 10)]
    clf = CNNClassifier(layers, max_iter=1, random_state=0).fit(X, y)
    return clf.predict(X)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="counts cores with Linux's API")
def test_in_process_workers_share_the_cores():
    """Workers in the client's process (processes=False) get no OMP_NUM_THREADS: each task
    caps fastcnn's threads at its share, the cores over all the task slots here."""
    X, y = load_digits()
    default = fastcnn.get_num_threads()
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    )
    with cluster, distributed.Client(cluster) as client:
        _seen_threads.clear()
        futures = [client.submit(_fit_and_predict, X[:64], y[:64], pure=False) for _ in "ab"]
        client.gather(futures)
    expected = min(default, max(1, len(os.sched_getaffinity(0)) // 2))
    assert _seen_threads and set(_seen_threads) == {expected}
    _seen_threads.clear()
    _fit_and_predict(X[:64], y[:64])  # outside a worker: the default, untouched
    assert set(_seen_threads) == {default}
