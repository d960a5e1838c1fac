"""
Classic image filters with conv2d, checked against SciPy
========================================================

Before CNNs learned their kernels, image processing set them by hand. This applies four
such 3x3 kernels (sharpen, horizontal edges, vertical edges, box blur) to a photo that
ships with scikit-learn, with one call to ``fastcnn.functional.conv2d``: the four kernels
are the four output channels of a single convolution, just as in a conv layer. Each
result is compared with ``scipy.signal.correlate2d``, then the photo and the four filtered
versions are drawn side by side into a PNG (headless, no window opens)::

    python examples/classic_filters.py                      # writes classic_filters.png
    python examples/classic_filters.py --out filters.png --downsample 2

Needs Pillow to read the JPEG (scikit-learn's ``load_sample_images`` uses it) and
matplotlib for the picture: ``pip install "fastcnn[plot]"`` installs both. Without
matplotlib the numerical check still runs. Exit status: 0 when every filter matches SciPy,
1 when one does not, 69 (``EX_UNAVAILABLE``) when Pillow is missing.
"""

import argparse
import sys

import numpy as np
from scipy.signal import correlate2d

import fastcnn.functional as F

EXIT_MISMATCH = 1
EXIT_NO_PILLOW = 69

# float32 arithmetic on pixels in [0, 1] with 3x3 kernels whose weights sum, in absolute
# value, to at most 9: rounding stays far below 1e-5, while any real bug (a flipped
# kernel, a shifted window, wrong padding) makes differences of order 0.1 to 1.
TOLERANCE = 1e-5

FILTERS = {
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    # Sobel kernels: the horizontal-edge one measures how brightness changes from top to
    # bottom, so it lights up on horizontal edges (and the vertical-edge one vice versa).
    "horizontal edges": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "vertical edges": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "box blur": np.full((3, 3), 1 / 9),
}


def load_photo(downsample: int) -> np.ndarray:
    """scikit-learn's china.jpg as a (H, W) float32 grayscale image in [0, 1]."""
    from sklearn.datasets import load_sample_images

    rgb = load_sample_images().images[0]  # china.jpg, (427, 640, 3) uint8
    # ITU-R BT.601 luma: the eye is most sensitive to green, least to blue.
    gray = (rgb @ np.array([0.299, 0.587, 0.114]) / 255).astype(np.float32)
    if downsample > 1:
        # Averaging each k x k block is average pooling, another fastcnn op.
        gray = F.avg_pool2d(gray[None, None], downsample)[0, 0]
    return gray


def draw(photo: np.ndarray, filtered: dict, path: str) -> None:
    """The photo and each filtered image in one row, saved to ``path``."""
    # matplotlib.figure.Figure rather than pyplot: no GUI backend, no global state, so
    # it works on a server and in CI.
    from matplotlib.figure import Figure

    height, width = photo.shape
    panels = {"original": photo, **filtered}
    fig = Figure(figsize=(3.2 * len(panels), 3.2 * height / width + 0.6), layout="constrained")
    for ax, (name, image) in zip(fig.subplots(1, len(panels)), panels.items(), strict=True):
        if name.endswith("edges"):
            # Edge responses are signed: mid-gray is "no change", black and white are
            # changes in opposite directions. The limit ignores the strongest 0.5% so a
            # few extreme pixels (the zero padding makes the photo's border look like an
            # edge) do not wash out the rest.
            limit = float(np.percentile(np.abs(image), 99.5))
            ax.imshow(image, cmap="gray", vmin=-limit, vmax=limit)
        else:
            ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name)
        ax.set_axis_off()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Hand-set 3x3 filters on a photo.")
    parser.add_argument("--out", default="classic_filters.png", help="PNG file to write")
    parser.add_argument(
        "--downsample", type=int, default=1, metavar="K", help="shrink the photo K times first"
    )
    args = parser.parse_args(argv)

    try:
        photo = load_photo(args.downsample)
    except ImportError as exc:
        if "PIL" not in str(exc):  # scikit-learn reads the JPEG with Pillow (PIL)
            raise
        print(
            f"Reading the sample photo needs Pillow, which is not installed ({exc}).\n"
            'Install it with: pip install "fastcnn[plot]"   (or: pip install pillow)',
            file=sys.stderr,
        )
        return EXIT_NO_PILLOW
    print(f"photo: china.jpg, grayscale {photo.shape[0]}x{photo.shape[1]}")

    # conv2d works on batches of multi-channel images, NCHW: one image with one channel
    # in, and a weight of shape (out_channels=4, in_channels=1, 3, 3).
    weight = np.array(list(FILTERS.values()), dtype=np.float32)[:, None]
    # padding=1 adds a border of zeros so the output keeps the photo's size.
    out = F.conv2d(photo[None, None], weight, padding=1)[0]
    filtered = dict(zip(FILTERS, out, strict=True))

    # conv2d computes a cross-correlation (the kernel is not flipped), like PyTorch and
    # every CNN library, so the matching SciPy function is correlate2d, not convolve2d
    # (which would negate both Sobel results). mode="same" with a zero fill is padding=1.
    print(f"{'filter':<18}{'max |fastcnn - scipy|':>22}")
    worst = 0.0
    for name, kernel in FILTERS.items():
        expected = correlate2d(
            photo.astype(np.float64),
            np.asarray(kernel, np.float64),
            mode="same",
            boundary="fill",
            fillvalue=0,
        )
        diff = float(np.abs(filtered[name] - expected).max())
        worst = max(worst, diff)
        print(f"{name:<18}{diff:>22.2e}")
    if worst > TOLERANCE:
        print(f"MISMATCH: a filter differs from SciPy by more than {TOLERANCE:g}", file=sys.stderr)
        return EXIT_MISMATCH
    print(f"all filters match scipy.signal.correlate2d within {TOLERANCE:g}")

    try:
        draw(photo, filtered, args.out)
    except ImportError:
        print('the picture needs matplotlib: pip install "fastcnn[plot]"')
        return 0
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
