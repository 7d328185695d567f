#!/usr/bin/python3
"""The Theano MNIST softmax tutorial in PyTorch eager mode (a peer, when torch is installed).

Same task as bench/mnist_bench: float32, w ~ N(0, 0.01^2), SGD lr 0.05, 468 minibatches of
128 taken in order + a prediction pass over the 10 000 test images per epoch. The model is
written as a PyTorch user would: softmax(X w) through autograd, cost read every step (as the
tutorial's `cost = train(...)`), an in-place SGD update. Without torch it prints a JSON line
with "skipped" and exits 0, so bench/run-mnist carries on.

    /usr/bin/python3 bench/baselines/torch_softmax.py --epochs 5 --threads 1
"""

import argparse
import json
import os
import resource
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def skip(reason, label):
    print("torch_softmax.py: skipped: %s" % reason, file=sys.stderr)
    print(json.dumps({"bench": "mnist_softmax", "impl": "torch", "label": label,
                      "skipped": reason}))
    sys.exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ntrain", type=int, default=60000)
    ap.add_argument("--ntest", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--overhead-calls", type=int, default=2000)
    ap.add_argument("--json", help="also write the JSON summary line to this file")
    ap.add_argument("--label", default="")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args()
    if a.epochs < 0 or a.batch_size < 1 or a.ntrain < 1 or a.ntest < 1 or a.threads < 1:
        ap.error("--epochs must be >= 0; --batch-size, --ntrain, --ntest, --threads >= 1")

    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install raising anything else
        skip("import torch failed (%s: %s); Debian's python3-torch provides it"
             % (type(e).__name__, e), a.label)
    # The same IDX reader, float conversion, loop, timing and report as the NumPy baseline.
    from numpy_softmax import load, num, print_run, run_epochs, run_fields, time_calls

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    tr_x, tr_y, te_x, te_labels = load(a.data, a.ntrain, a.ntest)
    load_s = time.perf_counter() - t0
    tr_x, tr_y, te_x = (torch.from_numpy(v) for v in (tr_x, tr_y, te_x))
    te_labels = torch.from_numpy(te_labels)
    n = tr_x.shape[0]
    if a.batch_size > n:
        ap.error("--batch-size %d exceeds the %d training examples" % (a.batch_size, n))
    steps = n // a.batch_size
    w = (torch.randn(tr_x.shape[1], 10) * 0.01).requires_grad_()

    def train(x, y):
        py_x = torch.softmax(x @ w, dim=1)
        cost = torch.mean(-(y * torch.log(py_x)).sum(dim=1))  # categorical_crossentropy
        cost.backward()
        with torch.no_grad():
            w.sub_(a.lr * w.grad)
            w.grad = None
        return cost.item()

    def predict(x):
        with torch.no_grad():
            return torch.argmax(torch.softmax(x @ w, dim=1), dim=1)

    r = run_epochs(a, steps, tr_x, tr_y, train,
                   lambda: float((predict(te_x) == te_labels).double().mean()))

    # Per-call overhead: one step on a single example (then the weights are restored).
    saved = w.detach().clone()
    x1, y1 = tr_x[:1], tr_y[:1]
    train1_us = time_calls(lambda: train(x1, y1), a.overhead_calls)
    with torch.no_grad():
        w.copy_(saved)

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if not a.quiet:
        print("\n%d epochs x %d steps of %d + a %d-image test pass, PyTorch %s eager, %d thread(s)"
              % (a.epochs, steps, a.batch_size, te_x.shape[0], torch.__version__, a.threads))
        print_run(r)
        print("per call: train on 1 example %.1f us; peak RSS %.1f MiB" % (train1_us, rss_mib))

    summary = {
        "bench": "mnist_softmax", "impl": "torch", "backend": "torch " + torch.__version__,
        "label": a.label, "epochs": a.epochs, "steps_per_epoch": steps,
        "batch_size": a.batch_size, "ntrain": n, "ntest": int(te_x.shape[0]),
        **run_fields(r),
        "call_overhead_train1_us": num(train1_us), "peak_rss_mib": num(rss_mib),
        "threads_env": str(a.threads), "load_s": num(load_s),
    }
    line = json.dumps(summary)
    if a.json:
        with open(a.json, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
