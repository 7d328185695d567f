#!/usr/bin/env python3
"""The Theano MNIST softmax tutorial in PyTorch (eager) and JAX (eager and jit) on a GPU:
the baselines scripts/gpu-check compares thea's CUDA backend with, on the same task:
w (784, 10) ~ N(0, 0.01^2), batch 128, 468 steps per epoch, lr 0.05, the cost read
every step (as the tutorial's `cost = train(...)`), then a prediction over the 10k test
images. The dataset stays on the GPU. Prints one JSON line per framework.

  gpu_torch_mnist.py --data data/mnist --epochs 10 [--frameworks torch,jax]
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np


def load_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(data_dir, name):
    for cand in (name, name + ".gz"):
        p = os.path.join(data_dir, cand)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(os.path.join(data_dir, name))


def load_mnist(data_dir):
    trX = load_idx(find(data_dir, "train-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255.0
    teX = load_idx(find(data_dir, "t10k-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255.0
    trL = load_idx(find(data_dir, "train-labels-idx1-ubyte")).astype(np.int64)
    teL = load_idx(find(data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64)
    trY = np.zeros((trL.size, 10), np.float32)
    trY[np.arange(trL.size), trL] = 1
    return trX, trY, teX, teL


def bench_torch(trX, trY, teX, teL, epochs, bs):
    import torch
    dev = torch.device("cuda")
    X = torch.from_numpy(trX).to(dev)
    Y = torch.from_numpy(trY).to(dev)
    tX = torch.from_numpy(teX).to(dev)
    tL = torch.from_numpy(teL).to(dev)
    g = torch.Generator().manual_seed(42)
    w = (torch.randn(784, 10, generator=g) * 0.01).to(dev).requires_grad_(True)
    n_steps = (X.shape[0] - 1) // bs
    times, accs = [], []
    for e in range(epochs + 1):  # epoch 0 is warm-up (cuBLAS/cuDNN init, allocator)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(n_steps):
            xb = X[s * bs:(s + 1) * bs]
            yb = Y[s * bs:(s + 1) * bs]
            py = torch.softmax(xb @ w, dim=1)
            cost = torch.mean(-torch.sum(yb * torch.log(py), dim=1))
            cost.backward()
            with torch.no_grad():
                w -= 0.05 * w.grad
                w.grad.zero_()
            cost.item()
        with torch.no_grad():
            pred = torch.argmax(torch.softmax(tX @ w, dim=1), dim=1)
            acc = (pred == tL).float().mean().item()
        dt = (time.perf_counter() - t0) * 1e3
        if e > 0:
            times.append(dt)
            accs.append(acc)
    return {"framework": "torch-eager", "version": torch.__version__,
            "device": torch.cuda.get_device_name(0), "epochs": epochs,
            "ms_per_epoch_median": float(np.median(times)), "accuracy_last": accs[-1]}


def bench_jax(trX, trY, teX, teL, epochs, bs, jit):
    import jax
    import jax.numpy as jnp
    X = jax.device_put(trX)
    Y = jax.device_put(trY)
    tX = jax.device_put(teX)
    tL = jax.device_put(teL)
    w = jax.device_put(np.random.RandomState(42).randn(784, 10).astype(np.float32) * 0.01)

    def cost_fn(w, xb, yb):
        py = jax.nn.softmax(xb @ w, axis=1)
        return jnp.mean(-jnp.sum(yb * jnp.log(py), axis=1))

    grad_fn = jax.value_and_grad(cost_fn)

    def step(w, xb, yb):
        c, g = grad_fn(w, xb, yb)
        return w - 0.05 * g, c

    def predict(w, x):
        return jnp.argmax(jax.nn.softmax(x @ w, axis=1), axis=1)

    if jit:
        step = jax.jit(step)
        predict = jax.jit(predict)
    n_steps = (X.shape[0] - 1) // bs
    times, accs = [], []
    for e in range(epochs + 1):
        t0 = time.perf_counter()
        for s in range(n_steps):
            w, c = step(w, X[s * bs:(s + 1) * bs], Y[s * bs:(s + 1) * bs])
            float(c)
        acc = float(jnp.mean(predict(w, tX) == tL))
        dt = (time.perf_counter() - t0) * 1e3
        if e > 0:
            times.append(dt)
            accs.append(acc)
    return {"framework": "jax-jit" if jit else "jax-eager", "version": jax.__version__,
            "device": str(jax.devices()[0]), "epochs": epochs,
            "ms_per_epoch_median": float(np.median(times)), "accuracy_last": accs[-1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--jax-epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--frameworks", default="torch,jax-eager,jax-jit")
    args = ap.parse_args()
    trX, trY, teX, teL = load_mnist(args.data)
    status = 0
    for fw in args.frameworks.split(","):
        try:
            if fw == "torch":
                r = bench_torch(trX, trY, teX, teL, args.epochs, args.batch_size)
            elif fw == "jax-eager":
                r = bench_jax(trX, trY, teX, teL, args.jax_epochs, args.batch_size, False)
            elif fw == "jax-jit":
                r = bench_jax(trX, trY, teX, teL, args.epochs, args.batch_size, True)
            else:
                raise ValueError("unknown framework " + fw)
        except Exception as e:  # a missing framework is a skipped baseline, not a failure
            r = {"framework": fw, "error": "%s: %s" % (type(e).__name__, e)}
            status = 1
        print(json.dumps(r), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
