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
TUTORIAL = {0: 0.8862, 1: 0.8985, 9: 0.9163, 99: 0.9248}


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
    import numpy as np
    from numpy_softmax import load  # the same IDX reader and float conversion

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

    epoch_s, train_s, test_s, acc_at = [], [], [], {}
    accuracy = cost = float("nan")
    t_all = time.perf_counter()
    for epoch in range(a.epochs):
        t_epoch = time.perf_counter()
        cost_sum = 0.0
        for b in range(steps):
            s, e = b * a.batch_size, (b + 1) * a.batch_size
            cost_sum += train(tr_x[s:e], tr_y[s:e])
        t_test = time.perf_counter()
        accuracy = float((predict(te_x) == te_labels).double().mean())
        now = time.perf_counter()
        train_s.append(t_test - t_epoch)
        test_s.append(now - t_test)
        epoch_s.append(now - t_epoch)
        cost = cost_sum / steps
        if epoch in TUTORIAL:
            acc_at[epoch] = accuracy
        if not a.quiet:
            print("%03d %.4f  cost %.5f  %.4f s (train %.4f, test %.4f)"
                  % (epoch, accuracy, cost, epoch_s[-1], train_s[-1], test_s[-1]), flush=True)
    total_s = time.perf_counter() - t_all
    if a.epochs:
        acc_at[a.epochs - 1] = accuracy

    # Per-call overhead: one step on a single example (then the weights are restored).
    saved = w.detach().clone()
    x1, y1 = tr_x[:1], tr_y[:1]
    calls = a.overhead_calls
    for _ in range(min(calls // 10 + 1, 100)):
        train(x1, y1)
    t = time.perf_counter()
    for _ in range(calls):
        train(x1, y1)
    train1_us = (time.perf_counter() - t) / calls * 1e6 if calls else float("nan")
    with torch.no_grad():
        w.copy_(saved)

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    med = float(np.median(epoch_s)) if epoch_s else float("nan")
    if not a.quiet:
        print("\n%d epochs x %d steps of %d + a %d-image test pass, PyTorch %s eager, %d thread(s)"
              % (a.epochs, steps, a.batch_size, te_x.shape[0], torch.__version__, a.threads))
        if epoch_s:
            print("s/epoch: median %.4f, mean %.4f, min %.4f (train %.4f, test %.4f median)"
                  % (med, np.mean(epoch_s), min(epoch_s), np.median(train_s), np.median(test_s)))
        print("total %.2f s for %d epochs" % (total_s, a.epochs))
        for e, acc in sorted(acc_at.items()):
            ref = TUTORIAL.get(e)
            print("accuracy epoch %03d: %.4f" % (e, acc)
                  + (" (tutorial %.4f, diff %+.4f)" % (ref, acc - ref) if ref else ""))
        print("per call: train on 1 example %.1f us; peak RSS %.1f MiB" % (train1_us, rss_mib))

    def num(v):
        return None if v != v else round(v, 9)

    summary = {
        "bench": "mnist_softmax", "impl": "torch", "backend": "torch " + torch.__version__,
        "label": a.label, "epochs": a.epochs, "steps_per_epoch": steps,
        "batch_size": a.batch_size, "ntrain": n, "ntest": int(te_x.shape[0]),
        "s_per_epoch_median": num(med),
        "s_per_epoch_mean": num(float(np.mean(epoch_s))) if epoch_s else None,
        "s_per_epoch_min": num(min(epoch_s)) if epoch_s else None,
        "train_s_per_epoch_median": num(float(np.median(train_s))) if train_s else None,
        "test_s_per_epoch_median": num(float(np.median(test_s))) if test_s else None,
        "total_s": num(total_s), "final_accuracy": num(accuracy), "final_cost": num(cost),
        "accuracy": {str(e): acc for e, acc in sorted(acc_at.items())},
        "compile_cold_s": None, "compile_warm_s": None,
        "call_overhead_train1_us": num(train1_us), "peak_rss_mib": num(rss_mib),
        "threads_env": str(a.threads), "load_s": num(load_s),
        "epoch_s": [num(s) for s in epoch_s],
    }
    line = json.dumps(summary)
    if a.json:
        with open(a.json, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
