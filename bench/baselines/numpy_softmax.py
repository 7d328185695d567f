#!/usr/bin/python3
"""The Theano MNIST softmax tutorial in plain NumPy: the baseline thea is divided by.

Same task as bench/mnist_bench: float32, w ~ N(0, 0.01^2), SGD lr 0.05, 468 minibatches of
128 taken in order + a prediction pass over the 10 000 test images per epoch. The gradient
is written by hand (softmax, G = (p - y)/n, w -= lr * X.T @ G), BLAS limited to 1 thread:
on this 2-core machine OpenBLAS's second thread makes these skinny products slower, and
single-thread runs are stable. The last stdout line is a JSON summary like mnist_bench's.

    /usr/bin/python3 bench/baselines/numpy_softmax.py --epochs 5
"""

import os

# Must precede the first import of numpy: OpenBLAS reads these when it loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import gzip
import json
import resource
import struct
import sys
import time

try:
    import numpy as np
except ImportError:
    sys.exit("numpy_softmax.py: numpy is not importable by %s; install Debian's python3-numpy "
             "and run it with /usr/bin/python3" % sys.executable)

TUTORIAL = {0: 0.8862, 1: 0.8985, 9: 0.9163, 99: 0.9248}
FETCH_HINT = "run scripts/fetch-mnist to download MNIST into data/mnist, or pass --data DIR"


def read_idx(data_dir, name):
    """An IDX file (raw, else .gz) as an ndarray of its declared shape."""
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
        opener = open
    elif os.path.exists(path + ".gz"):
        path, opener = path + ".gz", gzip.open
    else:
        sys.exit("error: MNIST file %s(.gz) not found: %s" % (path, FETCH_HINT))
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        sys.exit("error: %s is not an unsigned-byte IDX file (%s)" % (path, FETCH_HINT))
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        sys.exit("error: %s holds %d bytes of data, its header says %s" % (path, data.size, shape))
    return data.reshape(shape)


def load(data_dir, ntrain, ntest):
    if not os.path.isdir(data_dir):
        sys.exit("error: MNIST data directory '%s' not found: %s" % (data_dir, FETCH_HINT))

    def images(name, n):
        x = read_idx(data_dir, name)
        x = x.reshape(x.shape[0], -1)[:n]
        out = np.empty(x.shape, dtype=np.float32)
        # load.py's x / 255. in float64, then floatX; in chunks so the float64 copy of the
        # whole set does not inflate the peak RSS reported below.
        for i in range(0, x.shape[0], 4096):
            out[i:i + 4096] = x[i:i + 4096].astype(np.float64) / 255.0
        return out

    tr_x = images("train-images-idx3-ubyte", ntrain)
    te_x = images("t10k-images-idx3-ubyte", ntest)
    tr_labels = read_idx(data_dir, "train-labels-idx1-ubyte")[:ntrain].astype(np.int64)
    te_labels = read_idx(data_dir, "t10k-labels-idx1-ubyte")[:ntest].astype(np.int64)
    tr_y = np.zeros((tr_labels.size, 10), dtype=np.float32)
    tr_y[np.arange(tr_labels.size), tr_labels] = 1
    return tr_x, tr_y, te_x, te_labels


def train_step(w, x, y, lr):
    """One SGD step in place on w; returns the mean cross-entropy before the update."""
    z = x @ w
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    p = e / s
    # -sum(y * log p) with log p = z - log s, stable as Theano's crossentropy_softmax.
    cost = float(np.mean(np.log(s[:, 0]) - (y * z).sum(axis=1)))
    g = (p - y) / np.float32(x.shape[0])
    w -= lr * (x.T @ g)
    return cost


def blas_info():
    """The BLAS numpy's process has loaded (from /proc/self/maps) and OpenBLAS's core."""
    libs = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "blas" in os.path.basename(path).lower():
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    info = {"libs": sorted(libs)}
    for lib in sorted(libs):
        try:
            import ctypes
            handle = ctypes.CDLL(lib)
            handle.openblas_get_config.restype = ctypes.c_char_p
            handle.openblas_get_corename.restype = ctypes.c_char_p
            info["openblas_config"] = handle.openblas_get_config().decode()
            info["openblas_core"] = handle.openblas_get_corename().decode()
            info["openblas_threads"] = int(handle.openblas_get_num_threads())
            break
        except (OSError, AttributeError):
            continue
    return info


def run_epochs(a, steps, tr_x, tr_y, train, test_accuracy):
    """The tutorial's loop, shared by the baselines: per epoch, train(x, y) -> cost on each of
    the `steps` consecutive minibatches, then test_accuracy(); timings and results in a dict."""
    r = {"epoch_s": [], "train_s": [], "test_s": [], "acc_at": {},
         "accuracy": float("nan"), "cost": float("nan")}
    t_all = time.perf_counter()
    for epoch in range(a.epochs):
        t_epoch = time.perf_counter()
        cost_sum = 0.0
        for b in range(steps):
            s, e = b * a.batch_size, (b + 1) * a.batch_size
            cost_sum += train(tr_x[s:e], tr_y[s:e])
        t_test = time.perf_counter()
        r["accuracy"] = accuracy = test_accuracy()
        now = time.perf_counter()
        r["train_s"].append(t_test - t_epoch)
        r["test_s"].append(now - t_test)
        r["epoch_s"].append(now - t_epoch)
        r["cost"] = cost_sum / steps
        if epoch in TUTORIAL:
            r["acc_at"][epoch] = accuracy
        if not a.quiet:
            print("%03d %.4f  cost %.5f  %.4f s (train %.4f, test %.4f)"
                  % (epoch, accuracy, r["cost"], r["epoch_s"][-1], r["train_s"][-1],
                     r["test_s"][-1]), flush=True)
    r["total_s"] = time.perf_counter() - t_all
    if a.epochs:
        r["acc_at"][a.epochs - 1] = r["accuracy"]
    return r


def time_calls(step, calls):
    """Mean microseconds per step() over `calls` calls, after a warm-up (NaN for none)."""
    for _ in range(min(calls // 10 + 1, 100)):
        step()
    t = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - t) / calls * 1e6 if calls else float("nan")


def print_run(r):
    """The epoch-time and accuracy lines of a baseline's report."""
    if r["epoch_s"]:
        print("s/epoch: median %.4f, mean %.4f, min %.4f (train %.4f, test %.4f median)"
              % (np.median(r["epoch_s"]), np.mean(r["epoch_s"]), min(r["epoch_s"]),
                 np.median(r["train_s"]), np.median(r["test_s"])))
    print("total %.2f s for %d epochs" % (r["total_s"], len(r["epoch_s"])))
    for e, acc in sorted(r["acc_at"].items()):
        ref = TUTORIAL.get(e)
        print("accuracy epoch %03d: %.4f" % (e, acc)
              + (" (tutorial %.4f, diff %+.4f)" % (ref, acc - ref) if ref else ""))


def num(v):
    return None if v != v else round(v, 9)  # NaN -> null


def run_fields(r):
    """The JSON summary fields every baseline reports the same way."""
    es = r["epoch_s"]
    return {
        "s_per_epoch_median": num(float(np.median(es))) if es else None,
        "s_per_epoch_mean": num(float(np.mean(es))) if es else None,
        "s_per_epoch_min": num(min(es)) if es else None,
        "train_s_per_epoch_median": num(float(np.median(r["train_s"]))) if es else None,
        "test_s_per_epoch_median": num(float(np.median(r["test_s"]))) if es else None,
        "total_s": num(r["total_s"]), "final_accuracy": num(r["accuracy"]),
        "final_cost": num(r["cost"]),
        "accuracy": {str(e): acc for e, acc in sorted(r["acc_at"].items())},
        "compile_cold_s": None, "compile_warm_s": None,
        "epoch_s": [num(s) for s in es],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ntrain", type=int, default=60000)
    ap.add_argument("--ntest", type=int, default=10000)
    ap.add_argument("--overhead-calls", type=int, default=2000)
    ap.add_argument("--json", help="also write the JSON summary line to this file")
    ap.add_argument("--label", default="")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args()
    if a.epochs < 0 or a.batch_size < 1 or a.ntrain < 1 or a.ntest < 1:
        ap.error("--epochs must be >= 0; --batch-size, --ntrain, --ntest >= 1")

    t0 = time.perf_counter()
    tr_x, tr_y, te_x, te_labels = load(a.data, a.ntrain, a.ntest)
    load_s = time.perf_counter() - t0
    n = tr_x.shape[0]
    if a.batch_size > n:
        ap.error("--batch-size %d exceeds the %d training examples" % (a.batch_size, n))
    steps = n // a.batch_size  # the tutorial's zip(range(0, n, bs), range(bs, n, bs))
    lr = np.float32(a.lr)
    rng = np.random.default_rng(a.seed)
    w = (rng.standard_normal((tr_x.shape[1], 10)) * 0.01).astype(np.float32)

    def test_accuracy():
        # argmax of softmax(X w) is argmax of X w: a hand-written predict skips the softmax.
        return float(np.mean(np.argmax(te_x @ w, axis=1) == te_labels))

    r = run_epochs(a, steps, tr_x, tr_y, lambda x, y: train_step(w, x, y, lr), test_accuracy)

    # Per-call overhead: one step on a single example, on a copy of w.
    w1, x1, y1 = w.copy(), tr_x[:1], tr_y[:1]
    train1_us = time_calls(lambda: train_step(w1, x1, y1, lr), a.overhead_calls)

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    blas = blas_info()
    if not a.quiet:
        print("\n%d epochs x %d steps of %d + a %d-image test pass, NumPy %s"
              % (a.epochs, steps, a.batch_size, te_x.shape[0], np.__version__))
        print_run(r)
        print("per call: train on 1 example %.1f us" % train1_us)
        print("peak RSS %.1f MiB; BLAS %s, core %s, %s thread(s)"
              % (rss_mib, ", ".join(blas["libs"]) or "?", blas.get("openblas_core", "?"),
                 blas.get("openblas_threads", os.environ.get("OPENBLAS_NUM_THREADS"))))

    summary = {
        "bench": "mnist_softmax", "impl": "numpy", "backend": "numpy " + np.__version__,
        "label": a.label, "epochs": a.epochs, "steps_per_epoch": steps,
        "batch_size": a.batch_size, "ntrain": n, "ntest": int(te_x.shape[0]),
        **run_fields(r),
        "call_overhead_train1_us": num(train1_us), "peak_rss_mib": num(rss_mib),
        "threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
        "blas": blas, "python": sys.version.split()[0], "load_s": num(load_s),
    }
    line = json.dumps(summary)
    if a.json:
        with open(a.json, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
