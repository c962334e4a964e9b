#!/usr/bin/env python
"""Top-k on a real teacher: the error of `SoftTarget` on what a `TeacherStore(topk=k)` serves, and on the sparse alternative.

    python bench/store_topk.py            # the teacher trained for 1,500 steps, students at 0, 300 and 3,300: under a minute
    python bench/store_topk.py --quick    # 100 steps each: a smoke run, numbers not meaningful

The teacher is `digits_cnn()` trained on all 1,797 images of scikit-learn's `load_digits` (so this needs scikit-learn);
the student `digits_mlp()`, distilled with `SoftTarget(T=4)`, is taken at three stages of its training. For each k and
temperature: the relative error of `SoftTarget`'s value, and the cosine between its gradient w.r.t. the student's
logits and the exact one, when the teacher's logits are replaced by what a store with `topk=k` serves (the top k
exact, the rest at its log-mean-exp), against the usual sparse alternative (KL over the teacher's top k classes only,
both sides renormalised). Prints a Markdown table.
"""
from __future__ import annotations
import argparse, tempfile, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # printed when fastai is imported
import torch, torch.nn.functional as F
from sklearn.datasets import load_digits
from fasterai.distill.all import SoftTarget, TeacherStore
from fasterai.distill.examples import digits_cnn, digits_mlp

def train(m, X, y, steps, targets=None, T=4.):
    "`steps` of AdamW on random batches of 32: cross-entropy on `y`, or `SoftTarget` on the logits `targets`"
    opt = torch.optim.AdamW(m.parameters(), 3e-3, weight_decay=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (32,))
        out = m(X[idx])
        loss = F.cross_entropy(out, y[idx]) if targets is None else SoftTarget(out, targets[idx], T=T)
        opt.zero_grad(); loss.backward(); opt.step()
    return m.eval()

def sparse(zs, zt, k, T):
    "KL over the teacher's top k classes only, both distributions renormalised there"
    idx = zt.topk(k, 1).indices
    return F.kl_div(F.log_softmax(zs.gather(1, idx)/T, 1), F.log_softmax(zt.gather(1, idx)/T, 1), log_target=True, reduction='batchmean') * T*T

def served(zt, X, k, folder):
    "The teacher's logits as a new store with `topk=k` keeps and serves them"
    with TeacherStore(Path(folder)/f'top{k}.db', topk=k) as s:
        s([X], lambda xb: [zt])
        return s([X], None)[0]

def val_grad(f, zs):
    "`f(zs)` and its gradient w.r.t. `zs`"
    zs = zs.clone().requires_grad_()
    v = f(zs)
    g, = torch.autograd.grad(v, zs)
    return v.item(), g

def rows(quick):
    torch.manual_seed(0)
    d = load_digits()
    X, y = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16, torch.tensor(d.target)
    teacher, student = digits_cnn(), digits_mlp()
    train(teacher, X, y, 100 if quick else 1500)
    with torch.no_grad(): zt = teacher(X)
    acc = (zt.argmax(1) == y).float().mean().item()
    zss = {'untrained': student(X).detach()}
    zss['half-trained'] = train(student.train(), X, y, 100 if quick else 300, zt)(X).detach()
    zss['trained'] = train(student.train(), X, y, 100 if quick else 3000, zt)(X).detach()
    cos = lambda a, b: F.cosine_similarity(a.flatten(), b.flatten(), 0).item()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1, 2, 3, 5):
            zr = served(zt, X, k, tmp)
            for T in (1, 4):
                for name, zs in zss.items():
                    full, gf = val_grad(lambda z: SoftTarget(z, zt, T=T), zs)
                    dense, gd = val_grad(lambda z: SoftTarget(z, zr, T=T), zs)
                    sp, gs = val_grad(lambda z: sparse(z, zt, k, T), zs)
                    out.append((k, T, name, full, (dense - full) / full, cos(gd, gf), (sp - full) / full, cos(gs, gf)))
    return acc, out

def main(a):
    torch.set_num_threads(a.threads)
    acc, table = rows(a.quick)
    print(f"## Top-k on a real teacher: a CNN on `load_digits` (train accuracy {acc:.3f}), all 1,797 images"
          + (' (--quick: numbers not meaningful)' if a.quick else ''))
    print("\nRelative error of the `SoftTarget` value, and cosine between its gradient w.r.t. the student's logits and the "
          "exact one; \"store\": what a `TeacherStore(topk=k)` serves (top k exact, the rest at its log-mean-exp); "
          "\"sparse\": KL over the teacher's top k classes only, both sides renormalised.\n")
    print('| k | T | student | exact loss | store: error | store: grad cos | sparse: error | sparse: grad cos |\n|---:|---:|---|---:|---:|---:|---:|---:|')
    for k, T, s, full, de, dc, se, sc in table: print(f"| {k} | {T:g} | {s} | {full:.4f} | {de:+.1%} | {dc:.3f} | {se:+.1%} | {sc:.3f} |")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='smoke run: 100 training steps for each model')
    p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads (default 1)')
    main(p.parse_args())
