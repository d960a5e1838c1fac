"""
CNNClassifier in a scikit-learn Pipeline, tuned with GridSearchCV
=================================================================

CNNClassifier is a regular scikit-learn estimator, so the usual tools work unchanged:
here a Pipeline turns the flat 64-pixel rows of scikit-learn's digits into 8x8 images in
[0, 1] and feeds them to the CNN, and GridSearchCV picks the learning rate and the batch
size by cross-validation on the training set. The test set is touched once, at the end.

Run it::

    python examples/sklearn_pipeline.py                        # 3-fold CV, 8 epochs a fit
    python examples/sklearn_pipeline.py --max-iter 2 --cv 2   # a quick run
"""

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from fastcnn import CNNClassifier


def rows_to_images(X):
    """Flat rows of 64 pixel values 0..16 -> (n, 1, 8, 8) float32 images in [0, 1]."""
    # A named function rather than a lambda: the fitted pipeline then pickles, which
    # GridSearchCV(n_jobs=...) and joblib.dump rely on.
    return (np.asarray(X, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Tune a CNNClassifier with GridSearchCV.")
    parser.add_argument("--max-iter", type=int, default=8, help="epochs per fit")
    parser.add_argument("--cv", type=int, default=3, help="cross-validation folds")
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)  # X: (1797, 64), pixel values 0..16
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=42
    )

    pipe = Pipeline(
        [
            ("to_images", FunctionTransformer(rows_to_images)),
            ("cnn", CNNClassifier("digits_cnn", max_iter=args.max_iter, random_state=0)),
        ]
    )
    # Parameters of a pipeline step are addressed as <step>__<parameter>.
    grid = {"cnn__learning_rate_init": [1e-3, 3e-3], "cnn__batch_size": [32, 128]}
    search = GridSearchCV(pipe, grid, cv=args.cv)
    search.fit(X_train, y_train)  # refits the best setting on all of X_train at the end

    print(f"{'learning_rate_init':>18}  {'batch_size':>10}  {'CV accuracy':>16}")
    results = search.cv_results_
    for params, mean, std in zip(
        results["params"], results["mean_test_score"], results["std_test_score"], strict=True
    ):
        print(
            f"{params['cnn__learning_rate_init']:>18g}  {params['cnn__batch_size']:>10d}  "
            f"{mean:>9.4f} +- {std:.4f}"
        )
    print(f"best params: {search.best_params_}")
    print(f"best CV accuracy: {search.best_score_:.4f}")
    print(f"test accuracy: {search.score(X_test, y_test):.4f}")


if __name__ == "__main__":
    main()
