#!/usr/bin/env python
"""A language model's tokens in a `TeacherStore(topk=k)`: bytes per kept logit and per token, and how far the sparse
`SoftTarget` from the store is from the one on the teacher's full logits.

    python bench/store_tokens.py            # about 2 minutes on two cores
    python bench/store_tokens.py --quick    # a smoke run: numbers not meaningful

The text is the docstrings of this Python's standard library (no download; see the notes on real text): word-level
tokens (`\\w+` or one symbol), the 8,000 most frequent words, the others mapped to an unknown token, and 0 pads. The
teacher, an embedding, a GRU and the vocabulary's logits, is trained briefly on that text; the student, a smaller one,
more briefly still. Sequences of 24 to 64 tokens are padded to 64 (`pad_id=0`): padding is not stored. For k = 8, 32
and 128 in fp16, the store's size per kept logit and per token, from the file's size and the number of tokens stored;
then, on the stored sequences, `SoftTarget` from the store (a `TopK`, computed sparse) against `SoftTarget` on the full
logits: the relative difference of its value and the cosine of its gradient w.r.t. the student's logits.
"""
from __future__ import annotations
import argparse, ast, collections, contextlib, io, os, re, subprocess, sys, sysconfig, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # printed when fastai is imported
import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from fasterai.distill.all import SoftTarget, TeacherStore, TopK

V, S, PAD, UNK = 8000, 64, 0, 1
SKIP = {'test', 'tests', 'idlelib', 'lib2to3', 'site-packages'}

def docstrings() -> list[str]:
    "The docstrings of the standard library's modules, classes and functions"
    root, out = Path(sysconfig.get_paths()['stdlib']), []
    for p in sorted(root.rglob('*.py')):
        if SKIP & set(p.relative_to(root).parts): continue
        try: tree = ast.parse(p.read_text(encoding='utf-8', errors='replace'))
        except (SyntaxError, ValueError): continue
        for n in ast.walk(tree):
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and (d := ast.get_docstring(n)): out.append(d)
    return out

def corpus(quick:bool) -> tuple[torch.Tensor, dict]:
    "The docstrings as one stream of word ids (0 pads, 1 is unknown), and what it counts"
    words = [w for d in docstrings() for w in re.findall(r"\w+|[^\w\s]", d)]
    if quick: words = words[:60_000]
    freq = collections.Counter(words)
    vocab = {w: i + 2 for i,(w,_) in enumerate(freq.most_common(V - 2))}
    ids = torch.tensor([vocab.get(w, UNK) for w in words])
    return ids, {'tokens': len(words), 'distinct': len(freq), 'covered': float((ids != UNK).float().mean())}

def sequences(ids:torch.Tensor, n:int, seed:int) -> tuple[torch.Tensor, torch.Tensor]:
    "`n` sequences of 24 to 64 tokens from random places, padded to 64, and their next tokens as labels (-100 where none)"
    g = torch.Generator().manual_seed(seed)
    start, lens = torch.randint(0, len(ids) - S - 1, (n,), generator=g), torch.randint(24, S + 1, (n,), generator=g)
    x = torch.stack([ids[s:s + S + 1] for s in start.tolist()])
    pos = torch.arange(S + 1)
    x = torch.where(pos < lens[:, None], x, PAD)
    y = torch.where(x[:, 1:] == PAD, -100, x[:, 1:])
    return x[:, :S].contiguous(), y

class LM(nn.Module):
    "The next word from the last `n` words: their embeddings, one hidden layer, the vocabulary's logits (causal: right padding changes no real token)"
    def __init__(self, d:int, h:int, n:int=3):
        super().__init__()
        self.n, self.emb, self.hid, self.out = n, nn.Embedding(V, d, padding_idx=PAD), nn.Linear(n*d, h), nn.Linear(h, V)
    def forward(self, x):
        ctx = [F.pad(x, (i, 0), value=PAD)[:, :x.shape[1]] for i in range(self.n)]  # the word, the one before, ...
        return self.out(F.relu(self.hid(torch.cat([self.emb(c) for c in ctx], -1))))

def train(m:nn.Module, ids:torch.Tensor, steps:int, seed:int) -> nn.Module:
    "`steps` of AdamW with cross-entropy on random batches of 16 sequences of up to 32 tokens"
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(m.parameters(), 3e-3)
    for i in range(steps):
        x, y = sequences(ids, 16, seed*100_000 + i)
        x, y = x[:, :32], y[:, :32]  # short batches: more steps in the same time
        loss = F.cross_entropy(m(x).reshape(-1, V), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(); loss.backward(); opt.step()
    return m.eval()

def sizes(teacher, x, folder, ks) -> list[dict]:
    "Fill a store per k from the sequences `x`, in two halves: its size on disk per kept logit and per token, in all and for the second half"
    real, h, rows = (x != PAD).sum(1), len(x)//2, []
    n1, n = int(real[:h].sum()), int(real.sum())
    for k in ks:
        p, size = Path(folder)/f'top{k}.db', []
        for part in (x[:h], x[h:]):
            with TeacherStore(p, fmt='fp16', topk=k, pad_id=PAD) as s, contextlib.redirect_stdout(io.StringIO()):  # no progress bar
                s.fill(teacher, DataLoader(TensorDataset(part), batch_size=32))
            size.append(os.path.getsize(p))  # after the last connection closes, all of it is in the main file
        more = (size[1] - size[0]) / (n - n1)  # what more tokens cost: without the file's fixed pages
        rows.append({'k': k, 'items': len(x), 'tokens': n, 'bytes': size[1], 'per_logit': size[1]/(n*k), 'per_token': size[1]/n,
                     'more_per_logit': more/k, 'more_per_token': more, 'row_per_token': 4*k + 2})
    return rows

def gaps(teacher, student, x, y, folder, ks, Ts) -> dict:
    "For each k and T: SoftTarget from the store (sparse), and on its dense reconstruction, against SoftTarget on the full logits"
    stores, acc, n = {k: TeacherStore(Path(folder)/f'top{k}.db') for k in ks}, collections.defaultdict(float), 0
    for i in range(0, len(x), 32):
        xb, yb = x[i:i+32], y[i:i+32]
        real = (yb != -100).reshape(-1)
        with torch.no_grad(): zt, zs = teacher(xb).reshape(-1, V)[real], student(xb).reshape(-1, V)[real]
        m = int(real.sum()); n += m
        zs.requires_grad_()
        for T in Ts:
            full = SoftTarget(zs, zt, T=T); g_full, = torch.autograd.grad(full, zs)
            acc[('full', T)] += full.item()*m
            for k in ks:
                tk = stores[k]([xb], None)[0].reshape(-1, V)[real]  # a TopK of the real tokens: no dense teacher
                assert isinstance(tk, TopK)
                for how,t in (('sparse', tk), ('dense', tk.dense())):  # the dense reconstruction: the rest spread evenly
                    v = SoftTarget(zs, t, T=T); g, = torch.autograd.grad(v, zs)
                    acc[(how, k, T)] += v.item()*m
                    acc[(how + ' cos', k, T)] += F.cosine_similarity(g.reshape(1, -1), g_full.reshape(1, -1)).item()*m
    for s in stores.values(): s.close()
    return {key: v/n for key,v in acc.items()}

def cpu() -> str:
    try: return subprocess.run("grep 'model name' /proc/cpuinfo | head -1", shell=True, capture_output=True, text=True).stdout.split(':', 1)[1].strip()
    except IndexError: return 'unknown CPU'

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true')
    args = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    ids, c = corpus(args.quick)
    print(f"# Top-k tokens in a TeacherStore\n\nCPU: {cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; Python {sys.version.split()[0]}\n")
    print(f"Text: the standard library's docstrings, {c['tokens']:,} tokens, {c['distinct']:,} distinct; vocabulary {V:,} "
          f"(covers {c['covered']:.1%} of the text)\n")
    steps = (20, 10) if args.quick else (200, 60)
    teacher = train(LM(64, 64), ids, steps[0], seed=1)
    student = train(LM(16, 32, 2), ids, steps[1], seed=2)
    x, y = sequences(ids, 32 if args.quick else 256, seed=7)
    with torch.no_grad():
        ce = lambda m: F.cross_entropy(m(x).reshape(-1, V), y.reshape(-1), ignore_index=-100).item()
        print(f"Teacher {steps[0]} steps, cross-entropy {ce(teacher):.2f}; student {steps[1]} steps, {ce(student):.2f} "
              f"(uniform: {torch.log(torch.tensor(float(V))):.2f})\n")
    with tempfile.TemporaryDirectory() as folder:
        ks = (8, 32, 128)
        rows = sizes(teacher, x, folder, ks)
        print("| k | items | tokens stored | file, bytes | per kept logit | per token | second half: per kept logit | per token | row: per token |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['k']} | {r['items']} | {r['tokens']:,} | {r['bytes']:,} | {r['per_logit']:.2f} | {r['per_token']:.1f} "
                  f"| {r['more_per_logit']:.2f} | {r['more_per_token']:.1f} | {r['row_per_token']} |")
        print(f"\nFull fp16 logits would take {2*V:,} bytes per token.\n")
        Ts = (1., 2., 4.)
        g = gaps(teacher, student, x[:128], y[:128], folder, ks, Ts)
    print("SoftTarget on the stored tokens, against SoftTarget on the teacher's full logits (relative difference of the value, "
          "cosine of the gradient w.r.t. the student's logits); sparse: from the store's TopK (what the store serves); dense "
          "reconstruction: the same top k with the rest spread evenly over the other classes, for comparison\n")
    print("| k | T | full logits | sparse: value | difference | gradient cosine | dense reconstruction: difference | gradient cosine |")
    print("|---|---|---|---|---|---|---|---|")
    for k in ks:
        for T in Ts:
            f = g[('full', T)]
            print(f"| {k} | {T:g} | {f:.4f} | {g[('sparse', k, T)]:.4f} | {g[('sparse', k, T)]/f - 1:+.1%} | {g[('sparse cos', k, T)]:.4f} "
                  f"| {g[('dense', k, T)]/f - 1:+.1%} | {g[('dense cos', k, T)]:.4f} |")
    print(f"\nRun time {time.time() - t0:.0f} s")

if __name__ == '__main__': main()
