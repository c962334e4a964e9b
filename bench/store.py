#!/usr/bin/env python
"""Benchmark of `TeacherStore`, the teacher-output store on disk, on the CPU.

    .venv/bin/python bench/store.py            # full run, about 5 minutes on 2 cores; writes bench/store.md
    .venv/bin/python bench/store.py --quick    # smoke run: every path, numbers not meaningful (writes nothing)

What it measures, against the issue's targets:

* **Fill**: `TeacherStore.fill(teacher, batches)` into a new store, against plain teacher inference (eval mode,
  `no_grad`) over the same batches, for a 10-class and a 1,000-class head, fp32 rows (and fp16 for 1,000 classes).
  Target: within 10%. Rounds alternate the two, and the median of the per-round ratios is shown.
* **Students from the store, teacher never loaded**: a fresh subprocess (this script with `--child epochs-W`) that
  never builds the teacher trains one student for rounds of three epochs, adding and removing the callback: alone, with
  `KnowledgeDistillationCallback(None, SoftTarget, store=...)`, and with the same outputs in a `TeacherCache` (order
  rotating). Target <= 1.03x. It is judged in parts, inside training: the callback's own time per batch (its events
  and the teacher pre-hook, which holds the lookup) plus the extra backward pass, over the student's batch alone. The
  end-to-end batch and epoch ratios are shown too; on a shared VM their bursts move them by several percent. Peak
  memory: one fresh subprocess per configuration (`--child rss-student`, `--child rss-store`), peak resident set size
  (VmHWM) over the whole process, and the growth during `fit` (VmHWM reset through /proc/self/clear_refs just before
  it). Target <= 1.03x.
* **Lookup**: in the same subprocess, `store(xb, None)` for one training batch (keys, query, checksums and decoding),
  and its parts, against one training step of the student (forward, backward, optimizer step). Target <= 2%.
* **Size** of a store per 1,000 items, for 10 and 1,000 classes, fp32, fp16 and top-k, and extrapolated to the
  1,281,167 training images of ImageNet-1k.
* **SQLite vs LMDB** (only with `--lmdb DIR`, a folder where the `lmdb` package is installed, e.g.
  `pip install --target /tmp/lmdbpkg lmdb`): insert and lookup of rows of these sizes, 64 at a time.
* **Top-k on a real teacher**: a CNN trained on `load_digits`; for students at three stages of training, the error
  of `SoftTarget` (value, and cosine of the gradient w.r.t. the student's logits) when the teacher's logits are
  replaced by the store's top-k reconstruction (top k exact, the rest at its log-mean-exp), against the usual sparse
  alternative (KL over the top k classes only, both sides renormalised).

Details: `torch.set_num_threads(1)` (`--threads`); synthetic 3x32x32 batches of 64, made once, served by a fastai
`DataLoader` with `bs=None`; plain ResNet-like CNNs (a stem that halves the resolution, three stages of two 3x3 conv
blocks): the students 16 and 32 channels wide at the first stage (3 and 12 MMACs per item; 12 is resnet8's cost), the
teacher 48 (27 MMACs); no progress bar, a silent logger. The store lives
in a temporary folder on the same disk as the repository (`--dir`).
"""
from __future__ import annotations
import argparse, json, math, os, platform, resource, shutil, statistics, subprocess, sys, tempfile, time, warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

warnings.filterwarnings('ignore')
import torch
import torch.nn as nn
import torch.nn.functional as F

# the default student (width 32) costs 12 MMACs per item, as much as resnet8, the smallest CIFAR student of the usual KD
# tables (mdistiller's); width 16 (3 MMACs) is timed too, as a student smaller than any of those
BS, W_STUDENT, W_TEACHER, IMAGENET = 64, 32, 48, 1_281_167
FULL  = dict(n_train=16, n_valid=2, rounds=30, fill_batches=16, fill_rounds=9, lookups=300)
QUICK = dict(n_train=3, n_valid=1, rounds=2, fill_batches=3, fill_rounds=1, lookups=10)

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='smoke run: every path, tiny sizes, writes nothing')
    p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads (default 1)')
    p.add_argument('--dir', default=None, help='where the stores are written (default: a temporary folder in bench/)')
    p.add_argument('--lmdb', default=None, help='a folder holding the lmdb package, to compare SQLite with LMDB')
    p.add_argument('--out', default=str(Path(__file__).with_name('store.md')), help='the Markdown file written')
    p.add_argument('--widths', default='16,32', help='student widths for the epoch timings (16: the default student)')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)    # internal: a measurement in a fresh process
    p.add_argument('--store', default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)

# ------------------------------------------------------------------------------------------------ models and data

def block(ci, co, stride):
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))

def cnn(w, n_out=10):
    "3x32x32 -> `n_out`: a stem that halves the resolution, three stages of two conv blocks, pooling, a linear head"
    stages = [block(3, w, 2), block(w, w, 1), block(w, w, 1), block(w, 2*w, 2), block(2*w, 2*w, 1), block(2*w, 4*w, 2), block(4*w, 4*w, 1)]
    return nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4*w, n_out))

def macs(model):
    "Multiply-accumulates per item of one forward (Conv2d and Linear layers)"
    total = 0
    def hook(m, i, o):
        nonlocal total
        total += o[0].numel() * (m.in_channels * m.kernel_size[0] * m.kernel_size[1] if isinstance(m, nn.Conv2d) else m.in_features)
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad(): model.eval()(torch.zeros(1, 3, 32, 32))
    for h in hs: h.remove()
    return total

def batches(n, seed, n_out=10):
    "`n` synthetic batches, the same in every process"
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BS, 3, 32, 32, generator=g), torch.randint(0, n_out, (BS,), generator=g)) for _ in range(n)]

def make_learner(train, valid, store=None, width=W_STUDENT):
    "The student, alone or distilled from `store` without a teacher"
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fasterai.distill.distillation_callback import KnowledgeDistillationCallback
    from fasterai.distill.losses import SoftTarget
    torch.manual_seed(1)
    student = cnn(width)
    cbs = [] if store is None else [KnowledgeDistillationCallback(None, SoftTarget, weight=0.5, store=store)]
    learn = Learner(DataLoaders(DataLoader(train, bs=None), DataLoader(valid, bs=None)), student, loss_func=nn.CrossEntropyLoss(), cbs=cbs)
    learn.logger = lambda *a, **k: None  # silent, but the callback still adds and fills its columns
    return learn

def fit1(learn):
    "Wall and CPU seconds of one `fit(1)`"
    with learn.no_bar():
        t,c = time.perf_counter(),time.process_time()
        learn.fit(1, 1e-3)
        return time.perf_counter() - t, time.process_time() - c

def cpu_name():
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()

def vm(field):
    "A field of /proc/self/status, in MB (Linux only), or None"
    try:
        for line in open('/proc/self/status'):
            if line.startswith(field + ':'): return int(line.split()[1]) / 1024
    except OSError: return None

def reset_peak():
    "Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible"
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return True
    except OSError: return False

# ------------------------------------------------------------------------------------------------ the children

def child(args, cfg):
    "A measurement in a fresh process that never builds the teacher: its results as JSON on the last line of stdout"
    torch.set_num_threads(args.threads)
    from fasterai.distill.cache import TeacherStore, item_keys
    train,valid = batches(cfg['n_train'], 0),batches(cfg['n_valid'], 1)
    res = {}
    if args.child in ('rss-student', 'rss-store'):
        learn = make_learner(train, valid, TeacherStore(args.store, readonly=True) if args.child == 'rss-store' else None)
        before = vm('VmRSS')
        res['reset'] = reset_peak()
        fit1(learn); fit1(learn)
        res.update(hwm_fit=vm('VmHWM'), rss_before=before, maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   teacher_in_process=any(type(m).__name__ == 'Linear' and m.in_features == 4*W_TEACHER for m in _all_modules()))
    elif args.child.startswith('epochs'):
        from fasterai.distill.cache import TeacherCache
        from fasterai.distill.distillation_callback import KnowledgeDistillationCallback
        from fasterai.distill.losses import SoftTarget
        width = int(args.child.split('-')[1])
        store = TeacherStore(args.store, readonly=True)
        memory = TeacherCache(256)  # the same outputs, in memory: what the callback and the keys cost without SQLite
        for xb,_ in train: memory([xb], lambda sub: store(sub, None))
        # one learner, whose callback changes from epoch to epoch: two learners differ by a few percent on their own
        # (where their tensors lie in memory), more than what is measured here
        alone = make_learner(train, valid, width=width)
        start,end = batch_timer()
        alone.add_cbs([start, end])
        kd = {'alone': None, 'store': KnowledgeDistillationCallback(None, SoftTarget, weight=0.5, store=store),
              'memory': KnowledgeDistillationCallback(None, SoftTarget, weight=0.5, store=memory)}
        def epoch(name):
            if kd[name] is not None: alone.add_cb(kd[name])
            end.ts = []
            try: return fit1(alone), end.ts
            finally:
                if kd[name] is not None: alone.remove_cb(kd[name])
        for name in kd: epoch(name)  # warm-up
        times,names,per = [],list(kd),{n: [] for n in kd}
        for r in range(cfg['rounds']):
            row = {}
            for name in names[r % 3:] + names[:r % 3]:
                row[name],ts = epoch(name)
                per[name] += ts
            times.append(row)
        res.update(times=times, batches=per, hit_rate=store.epoch_hit_rate,
                   memory_misses=memory.misses - len(train)*BS)
        # in parts, inside training: the time spent in the callback's own code (its events and the teacher pre-hook,
        # which holds the lookup) in each training batch, and the backward pass, with and without the callback
        from fasterai.distill import distillation_callback as dc, cache as cache_mod
        own,patched = {'cb': 0., 'lookup': 0.},[]
        def timed(obj, name, key):
            f = getattr(obj, name)
            def g(*a, **k):
                t = time.perf_counter()
                try: return f(*a, **k)
                finally: own[key] += time.perf_counter() - t
            patched.append((obj, name, f)); setattr(obj, name, g)
        for ev in ('before_batch', 'after_loss', 'after_batch'): timed(dc.KnowledgeDistillationCallback, ev, 'cb')
        timed(dc._TeacherSession, '_teacher_first', 'cb')
        timed(cache_mod.TeacherOutputs, '__call__', 'lookup')
        parts_in,bw = {n: [] for n in kd},{n: [] for n in kd}
        start.reset = lambda: own.update(cb=0., lookup=0.)
        for r in range(max(cfg['rounds'] // 3, 1)):
            for name in names:
                end.parts,end.bw = [],[]
                end.own = own
                epoch(name)
                parts_in[name] += end.parts; bw[name] += end.bw
        for obj,name,f in patched: setattr(obj, name, f)
        res.update(parts_in=parts_in, backward=bw)
        # one training step of the student, and the parts of a lookup of one batch's keys
        xb,yb = train[0]
        model,opt = alone.model.train(),torch.optim.Adam(alone.model.parameters())
        def step():
            loss = F.cross_entropy(model(xb), yb); loss.backward(); opt.step(); opt.zero_grad()
        store.watch(None)
        keys = item_keys([xb])
        parts = OrderedDict(step=step, lookup=lambda: store([xb], None), keys=lambda: item_keys([xb]),
                            query=lambda: store._get(keys))
        rows = store._get(keys)
        parts['decode'] = lambda: store._stack(rows, 'cpu')
        for f in parts.values(): f()
        res['per_batch'] = {}
        for name,f in parts.items():
            n = cfg['lookups'] if name != 'step' else max(cfg['lookups'] // 10, 3)
            ts = []
            for _ in range(n):
                t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
            res['per_batch'][name] = statistics.median(ts)
    print(json.dumps(res))

def batch_timer():
    "Two callbacks that time each training batch, from before the first `before_batch` to after the last `after_batch`"
    from fastai.callback.core import Callback
    class Start(Callback):
        order = -1000
        def __init__(self): self.reset,self.end = None,None
        def before_batch(self):
            self.t0 = time.perf_counter() if self.training else None
            if self.reset: self.reset()
        def after_backward(self):  # the first callback after the backward pass
            if self.t0 is not None: self.end.bw.append(time.perf_counter() - self.end.t_loss)
    class End(Callback):
        order = 1000
        def __init__(self, start): self.start,self.ts,self.bw,self.parts,self.own = start,[],[],[],None
        def after_loss(self): self.t_loss = time.perf_counter()  # the last callback before the backward pass
        def after_batch(self):
            if self.start.t0 is None: return
            self.ts.append(time.perf_counter() - self.start.t0)
            if self.own is not None: self.parts.append(dict(self.own))
    start = Start()
    start.end = End(start)
    return start,start.end

def _all_modules():
    import gc
    return [o for o in gc.get_objects() if isinstance(o, nn.Module)]

def run_child(args, name, store, cfg_name):
    cmd = [sys.executable, __file__, '--child', name, '--store', str(store), '--threads', str(args.threads)] + (['--quick'] if args.quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    if out.returncode: raise RuntimeError(f"child {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

# ------------------------------------------------------------------------------------------------ the parent

def fill_rows(args, cfg, tmp):
    "Fill time against teacher inference over the same batches"
    from fasterai.distill.cache import TeacherStore
    rows = []
    for n_out,fmt in ((10, 'fp32'), (1000, 'fp32'), (1000, 'fp16')):
        torch.manual_seed(0)
        teacher = cnn(W_TEACHER, n_out).eval()
        data = batches(cfg['fill_batches'], 2, n_out)
        def infer():
            with torch.no_grad():
                for xb,_ in data: teacher(xb)
        def fill():
            "A new store filled with `data`; opening and closing it are not timed"
            p = tmp/f'fill-{n_out}-{fmt}.db'
            for f in tmp.glob(p.name + '*'): f.unlink()
            with TeacherStore(p, fmt=fmt) as s:
                with _silent_stdout(): return _timed(lambda: s.fill(teacher, data))
        infer(); fill()  # warm-up
        res = []
        for r in range(cfg['fill_rounds']):
            t = {'fill': fill(), 'infer': _timed(infer)} if r % 2 else {'infer': _timed(infer), 'fill': fill()}
            res.append(t)
        med = lambda k, i: statistics.median(t[k][i] for t in res)
        ratios = [[t['fill'][i] / t['infer'][i] for t in res] for i in (0, 1)]
        # the same, in parts: one teacher batch, and what the store adds to it (keys, encoding, insert, commit)
        with torch.no_grad(): outs = [teacher(xb) for xb,_ in data]
        def put(s, i): s([data[i][0]], lambda sub: [outs[i]])
        per_batch = []
        for r in range(cfg['fill_rounds']):
            p = tmp/f'put-{n_out}-{fmt}-{r}.db'
            with TeacherStore(p, fmt=fmt) as s:
                put(s, 0)  # the first batch records the format
                for i in range(1, len(data)): per_batch.append(_timed(lambda: put(s, i))[1])
        teacher_batch = []
        with torch.no_grad():
            for xb,_ in data: teacher_batch.append(_timed(lambda: teacher(xb))[1])
        store_ms,teacher_ms = statistics.median(per_batch),statistics.median(teacher_batch)
        rows.append((f"{n_out} classes, {fmt}", med('infer', 0), med('fill', 0), *[(statistics.median(r), min(r), max(r)) for r in ratios],
                     teacher_ms, store_ms))
    return rows

def _timed(f):
    "Wall and CPU seconds of `f()`"
    t,c = time.perf_counter(),time.process_time()
    f()
    return time.perf_counter() - t, time.process_time() - c

@contextmanager
def _silent_stdout():
    "The progress bar's text goes nowhere (its updates still run)"
    old = sys.stdout
    with open(os.devnull, 'w') as f:
        sys.stdout = f
        try: yield
        finally: sys.stdout = old

def size_rows(tmp, n=4000):
    from fasterai.distill.cache import TeacherStore
    rows = []
    for n_out,fmts in ((10, [('fp32', None), ('fp16', None), ('fp16', 3)]), (1000, [('fp32', None), ('fp16', None), ('fp32', 10), ('fp16', 10), ('fp16', 5)])):
        g = torch.Generator().manual_seed(0)
        X,logits = torch.randn(n, 8, generator=g),torch.randn(n, n_out, generator=g)*3
        for fmt,k in fmts:
            p = tmp/f'size-{n_out}-{fmt}-{k}.db'
            with TeacherStore(p, fmt=fmt, topk=k) as s:
                for i in range(0, n, 250): s([X[i:i+250]], lambda xb, i=i: [logits[i:i+250]])
            kib = p.stat().st_size / 2**10 / (n/1000)
            rows.append((n_out, fmt + (f", top {k}" if k else ''), kib, kib*IMAGENET/1000/2**20 if n_out == 1000 else None))
    return rows

def kv_rows(args, tmp, n=20000, bs=64, reps=300):
    "SQLite (as the store uses it) against LMDB: insert of batches of rows, lookup of `bs` random keys"
    sys.path.insert(0, args.lmdb)
    import random, sqlite3, lmdb, xxhash
    keys = [xxhash.xxh3_128(str(i).encode()).digest() for i in range(n)]  # 16 bytes, as `item_keys` makes them
    rng = random.Random(0)
    look = [rng.sample(keys, bs) for _ in range(reps)]
    rows = []
    for size in (44, 2004, 4004):
        val = os.urandom(size)
        p = tmp/f'kv-{size}.db'
        con = sqlite3.connect(p, isolation_level=None)
        for pragma in ('page_size=16384', 'journal_mode=WAL', 'synchronous=NORMAL'): con.execute('PRAGMA ' + pragma)
        con.execute('CREATE TABLE items (r INTEGER PRIMARY KEY, id INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL)')
        con.execute('CREATE UNIQUE INDEX items_id ON items (id)')
        iid = lambda k: int.from_bytes(k[:8], 'little', signed=True)
        t = time.perf_counter()
        for i in range(0, n, bs):
            con.execute('BEGIN IMMEDIATE')
            con.executemany('INSERT OR IGNORE INTO items (id, k, v) VALUES (?, ?, ?)', [(iid(k), k, val) for k in keys[i:i+bs]])
            con.execute('COMMIT')
        w_sql = (time.perf_counter() - t) / (n/bs)
        q = f"SELECT id, k, v FROM items WHERE id IN ({','.join('?'*bs)})"
        t = time.perf_counter()
        for b in look: found = {r[0]: r[1:] for r in con.execute(q, [iid(k) for k in b])}
        r_sql = (time.perf_counter() - t) / reps
        con.close()
        # sync=False: like SQLite's synchronous=NORMAL, a crash of the process loses nothing committed, a power cut may
        env = lmdb.open(str(tmp/f'kv-{size}.lmdb'), map_size=2**34, sync=False)
        t = time.perf_counter()
        for i in range(0, n, bs):
            with env.begin(write=True) as tx:
                for k in keys[i:i+bs]: tx.put(k, val, overwrite=False)
        w_lmdb = (time.perf_counter() - t) / (n/bs)
        t = time.perf_counter()
        for b in look:
            with env.begin() as tx: found = [tx.get(k) for k in b]
        r_lmdb = (time.perf_counter() - t) / reps
        env.close()
        rows.append((size, w_sql, w_lmdb, r_sql, r_lmdb))
    return rows

def topk_rows(quick):
    "The error of SoftTarget on the store's top-k reconstruction, and on the sparse alternative, for a real teacher"
    from sklearn.datasets import load_digits
    from fasterai.distill.cache import _Codec
    from fasterai.distill.losses import SoftTarget
    torch.manual_seed(0)
    d = load_digits()
    X,y = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16,torch.tensor(d.target)
    conv = lambda ci, co: nn.Sequential(nn.Conv2d(ci, co, 3, padding=1), nn.BatchNorm2d(co), nn.ReLU())
    teacher = nn.Sequential(conv(1, 32), conv(32, 64), nn.MaxPool2d(2), conv(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    def train(m, steps, targets=None, T=4.):
        opt = torch.optim.AdamW(m.parameters(), 3e-3, weight_decay=1e-2)
        for i in range(steps):
            idx = torch.randint(0, len(X), (32,))
            out = m(X[idx])
            loss = F.cross_entropy(out, y[idx]) if targets is None else SoftTarget(out, targets[idx], T=T)
            opt.zero_grad(); loss.backward(); opt.step()
        return m.eval()
    train(teacher, 100 if quick else 1500)
    with torch.no_grad(): zt = teacher(X)
    acc = (zt.argmax(1) == y).float().mean().item()
    def sparse(zs, zt, k, T):
        "KL over the teacher's top k classes only, both distributions renormalised there"
        idx = zt.topk(k, 1).indices
        return F.kl_div(F.log_softmax(zs.gather(1, idx)/T, 1), F.log_softmax(zt.gather(1, idx)/T, 1), log_target=True, reduction='batchmean') * T*T
    rows = []
    students = [('untrained', student), ('half-trained', None), ('trained', None)]
    s0 = [p.detach().clone() for p in student.parameters()]
    zss = {'untrained': student(X).detach()}
    zss['half-trained'] = train(student.train(), 100 if quick else 300, zt).__call__(X).detach()
    zss['trained'] = train(student.train(), 100 if quick else 3000, zt).__call__(X).detach()
    for k in (1, 2, 3, 5):
        codec = _Codec([[[10], 'torch.float32']], torch.float32, topk=k)
        zr = codec.decode(codec.encode([zt]))[0]
        for T in (1, 4):
            for sname,zs in zss.items():
                zs = zs.clone().requires_grad_()
                def val_grad(f):
                    v = f(zs); g, = torch.autograd.grad(v, zs); return v.item(), g
                full,gf = val_grad(lambda z: SoftTarget(z, zt, T=T))
                dense,gd = val_grad(lambda z: SoftTarget(z, zr, T=T))
                sp,gs = val_grad(lambda z: sparse(z, zt, k, T))
                cos = lambda a, b: F.cosine_similarity(a.flatten(), b.flatten(), 0).item()
                rows.append((k, T, sname, full, (dense - full) / full, cos(gd, gf), (sp - full) / full, cos(gs, gf)))
    return acc, rows

# ------------------------------------------------------------------------------------------------ report

def main(args):
    cfg = QUICK if args.quick else FULL
    if args.child: return child(args, cfg)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    tmp = Path(args.dir or tempfile.mkdtemp(dir=Path(__file__).parent, prefix='store-bench-'))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        import fastai, sqlite3
        from fasterai.distill.cache import TeacherStore
        lines = [f"- machine: {cpu_name()}, {os.cpu_count()} cores; torch.set_num_threads({args.threads}) -> {torch.get_num_threads()}",
                 f"- torch {torch.__version__}, fastai {fastai.__version__}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
                 f"- student {macs(cnn(W_STUDENT))/1e6:.2f} MMACs/item, teacher {macs(cnn(W_TEACHER))/1e6:.2f} MMACs/item; "
                 f"synthetic 3x32x32, bs={BS}, {cfg['n_train']} train + {cfg['n_valid']} valid batches; store in {tmp}"]
        print('\n'.join(lines), flush=True)
        # the store the students read, filled here with the teacher; the children never build it
        store_path = tmp/'students.db'
        torch.manual_seed(0)
        teacher = cnn(W_TEACHER)
        with TeacherStore(store_path) as s, _silent_stdout(): s.fill(teacher, batches(cfg['n_train'], 0))
        del teacher
        print('fill...', flush=True)
        fills = fill_rows(args, cfg, tmp)
        print('students (fresh processes)...', flush=True)
        widths = [int(w) for w in args.widths.split(',')]
        eps = {w: run_child(args, f'epochs-{w}', store_path, 'epochs') for w in widths}
        ep = eps[W_STUDENT]
        rss = {n: run_child(args, n, store_path, n) for n in ('rss-student', 'rss-store')}
        print('sizes...', flush=True)
        sizes = size_rows(tmp, 400 if args.quick else 4000)
        kv = kv_rows(args, tmp, 2000 if args.quick else 20000, reps=20 if args.quick else 300) if args.lmdb else None
        print('top-k on digits...', flush=True)
        acc,topk = topk_rows(args.quick)
    finally:
        if not args.dir: shutil.rmtree(tmp, ignore_errors=True)

    out = ['# `TeacherStore` benchmark', '', f"Output of `{' '.join(['python', 'bench/store.py'] + sys.argv[1:])}`, "
           f"{time.strftime('%Y-%m-%d')}.", '', *lines, '']
    # the summary against the targets, from the tables below
    pb,a,b = eps[W_STUDENT]['per_batch'],rss['rss-student'],rss['rss-store']
    parts = [1 + sb/tb for *_,tb,sb in fills]
    epoch = {w: statistics.median(t['store'][0] / t['alone'][0] for t in e['times']) for w,e in eps.items()}
    q = lambda e, k, i: statistics.quantiles(e['batches'][k], n=4)[i]
    batch = {w: {k: (q(e, k, 1) / q(e, 'alone', 1), q(e, k, 0) / q(e, 'alone', 0), (q(e, k, 1) - q(e, 'alone', 1))*1e3)
                 for k in ('store', 'memory')} for w,e in eps.items()}
    def in_parts(e, k):
        "Per training batch, medians in ms: the callback's own code, the lookup in it, the extra backward; and the ratio they give"
        cb,lk = (statistics.median(p[x] for p in e['parts_in'][k])*1e3 for x in ('cb', 'lookup'))
        bw = (statistics.median(e['backward'][k]) - statistics.median(e['backward']['alone']))*1e3
        alone = statistics.median(e['batches']['alone'])*1e3
        return cb,lk,bw,1 + (cb + max(bw, 0))/alone
    parts_in = {w: {k: in_parts(e, k) for k in ('store', 'memory')} for w,e in eps.items()}
    keys = pb['keys'] / pb['step']
    met = lambda ok: 'met' if ok else '**not met**'
    out += ['## Summary', '',
            f"- Fill within 10% of teacher inference: {met(max(parts) <= 1.10)} when measured in parts ({min(parts):.3f}-{max(parts):.3f}); "
            f"the end-to-end medians ({', '.join(f'{c[0]:.3f}' for *_,c,_,_ in fills)}, CPU time) swing by tens of percent from "
            "round to round on a shared machine.",
            f"- Student from the store vs alone, epoch time (target <= 1.03), in parts: the callback's own code inside training "
            "(its events and the teacher pre-hook, which holds the lookup) plus the extra backward pass, over the student's "
            "batch alone: " + ', '.join(f"width {w}: {p['store'][3]:.3f} ({met(p['store'][3] <= 1.03)}; {p['store'][0]:.2f} ms "
            f"in the callback, {p['store'][1]:.2f} of them in the lookup, {p['store'][2]:+.2f} ms of backward)" for w,p in parts_in.items())
            + ". The same with the outputs in memory: " + ', '.join(f"{p['memory'][3]:.3f}" for p in parts_in.values()) + ".",
            f"- End to end, time of a training batch, median over every batch (bursts of the shared machine move these by "
            "several percent from run to run, so they do not decide the target): "
            + ', '.join(f"width {w}: {b['store'][0]:.3f} ({b['store'][2]:+.2f} ms)" for w,b in batch.items())
            + ". The same with the outputs in memory instead of SQLite: "
            + ', '.join(f"{b['memory'][0]:.3f} ({b['memory'][2]:+.2f} ms)" for w,b in batch.items())
            + f"; the difference is the store's own share. Whole epochs, median of the per-round ratios: "
            + ', '.join(f'{r:.3f}' for r in epoch.values()) + '.',
            f"- Peak RSS vs the student alone: {b['maxrss'] / a['maxrss']:.3f} (whole process) "
            f"({met(b['maxrss'] / a['maxrss'] <= 1.03)}); the teacher is never built in those processes.",
            f"- Lookup of one batch (keys, query, checksums, decoding) vs a student step, each timed in a loop of its own: "
            f"{100*pb['lookup']/pb['step']:.2f}% ({met(pb['lookup']/pb['step'] <= 0.02)}); the keys are {100*keys:.2f}%. Inside "
            "training, where the student's step has just filled the CPU's caches with its own data, the lookup costs more: "
            + ', '.join(f"{p['store'][1]:.2f} ms, {100*p['store'][1]/statistics.median(eps[w]['batches']['alone'])/1e3:.1f}% of the "
                        f"width-{w} student's batch" for w,p in parts_in.items()) + " (table above).",
            f"- Sizes and the ImageNet-1k extrapolation: below. SQLite vs LMDB: " + ('below.' if kv else 'not measured (no --lmdb).'), '']
    ok = lambda v, target: f"**{v:.3f}**" if v > target else f"{v:.3f}"
    out += [f"## Fill: `TeacherStore.fill(teacher, batches)` vs teacher inference over the same {cfg['fill_batches']} batches (target <= 1.10)", '',
            f"Median of {cfg['fill_rounds']} rounds, each timing both back to back (order alternating); ratios per round; a new store each time "
            "(opening and closing it not timed); the progress bar runs, its text goes to /dev/null.", '',
            '"In parts": the CPU time of one teacher batch, and of what the store adds to it (keys, encoding, insert and commit '
            'of 64 new rows), medians over every batch and round; their ratio is the fill\'s cost without the noise of '
            'end-to-end timings on a shared machine.', '',
            '| teacher head, rows | inference s (wall) | fill s (wall) | fill / inference, wall (range) | CPU time (range) | '
            'in parts: teacher batch ms | + store ms | (teacher + store) / teacher |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    out += [f"| {n} | {ti:.3f} | {tf:.3f} | {ok(r[0], 1.10)} ({r[1]:.3f}-{r[2]:.3f}) | {ok(c[0], 1.10)} ({c[1]:.3f}-{c[2]:.3f}) | "
            f"{tb*1e3:.1f} | {sb*1e3:.2f} | {ok(1 + sb/tb, 1.10)} |" for n,ti,tf,r,c,tb,sb in fills]
    out += ['', '## Students from the store, teacher never loaded (fresh subprocesses)', '',
            f"One learner per student width, trained for {cfg['rounds']} rounds of three epochs: alone, with "
            "`KnowledgeDistillationCallback(None, SoftTarget, store=...)`, and with the same outputs in a `TeacherCache` "
            "passed as `store=` (\"memory\": the callback, the loss and the keys without SQLite); order rotating. The callback is "
            "added and removed, so every configuration runs the same model in the same memory (two learners differ by a few "
            f"percent on their own). A batch: from the first `before_batch` to the last `after_batch`, {cfg['n_train']} per "
            "epoch; the medians and lower quartiles over every batch resist the bursts of a shared virtual machine better "
            "than whole epochs, whose per-round ratios are shown with their range.", '',
            '| student | MMACs/item | batch alone, ms | + store, ms | store / alone: median (lower quartile) | memory / alone | '
            'epoch, store / alone (range) |', '|---:|---:|---:|---:|---:|---:|---:|']
    for w,e in eps.items():
        b,md = batch[w],statistics.median(e['batches']['alone'])
        er = [t['store'][0] / t['alone'][0] for t in e['times']]
        out += [f"| width {w} | {macs(cnn(w))/1e6:.1f} | {md*1e3:.2f} | {b['store'][2]:+.2f} | {ok(b['store'][0], 1.03)} ({b['store'][1]:.3f}) | "
                f"{b['memory'][0]:.3f} ({b['memory'][1]:.3f}) | {statistics.median(er):.3f} ({min(er):.3f}-{max(er):.3f}) |"]
    out += ['', f"In parts, inside training ({max(cfg['rounds'] // 3, 1)} more rounds, with timers around the callback's "
            "methods, which adds their own small cost): medians per training batch, in ms.", '',
            '| student | batch alone | callback, store | its lookup | callback, memory | its lookup | backward alone | '
            'backward, store | store: (callback + extra backward) / batch alone | memory: same |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for w,e in eps.items():
        ps,pm = parts_in[w]['store'],parts_in[w]['memory']
        b = lambda k: statistics.median(e['backward'][k])*1e3
        out += [f"| width {w} | {statistics.median(e['batches']['alone'])*1e3:.2f} | {ps[0]:.2f} | {ps[1]:.2f} | {pm[0]:.2f} | "
                f"{pm[1]:.2f} | {b('alone'):.2f} | {b('store'):.2f} | {ok(ps[3], 1.03)} | {pm[3]:.3f} |"]
    out += ['', '| peak memory | student alone | student + store | ratio | target |', '|---|---:|---:|---:|---:|']
    a,b = rss['rss-student'],rss['rss-store']
    out += [f"| peak RSS of the whole process, MB | {a['maxrss']:.0f} | {b['maxrss']:.0f} | {ok(b['maxrss'] / a['maxrss'], 1.03)} | <= 1.03 |"]
    if a['reset'] and b['reset']:
        out += [f"| peak RSS during fit (VmHWM reset before it), MB | {a['hwm_fit']:.0f} (+{a['hwm_fit'] - a['rss_before']:.0f}) | "
                f"{b['hwm_fit']:.0f} (+{b['hwm_fit'] - b['rss_before']:.0f}) | {ok(b['hwm_fit'] / a['hwm_fit'], 1.03)} | <= 1.03 |"]
    out += ['', f"Store hit rate in the timed epochs: {ep['hit_rate']:.3f}. A teacher in the students' processes: "
            f"{a['teacher_in_process'] or b['teacher_in_process']}.", '',
            '## Lookup of one batch\'s keys (64 items), against one training step of the student (target <= 2%)', '',
            '| | ms (median) | % of a student step |', '|---|---:|---:|',
            f"| student step (forward, backward, Adam) | {pb['step']*1e3:.2f} | 100 |"]
    for k,name in (('lookup', '**`store(xb, None)`: all of a lookup**'), ('keys', 'its keys (XXH3-128 of the inputs)'),
                   ('query', 'its SQLite query'), ('decode', 'its checksums and decoding')):
        out += [f"| {name} | {pb[k]*1e3:.3f} | {100*pb[k]/pb['step']:.2f} |"]
    out += ['', f"## Size per 1,000 items (random logits, {4000 if not args.quick else 400} items per store)", '',
            '| classes | stored | KiB per 1,000 items | bytes per item | ImageNet-1k train (1,281,167 items), GiB |', '|---:|---|---:|---:|---:|']
    out += [f"| {n} | {s} | {kib:.1f} | {kib*1.024:.0f} | {'' if gib is None else f'{gib:.2f}'} |" for n,s,kib,gib in sizes]
    if kv:
        out += ['', '## SQLite (as the store uses it) vs LMDB: 20,000 rows, batches of 64 keys', '',
                '| row bytes | insert + commit, SQLite ms | LMDB ms | lookup, SQLite ms | LMDB ms |', '|---:|---:|---:|---:|---:|']
        out += [f"| {s} | {ws*1e3:.2f} | {wl*1e3:.2f} | {rs*1e3:.3f} | {rl*1e3:.3f} |" for s,ws,wl,rs,rl in kv]
    out += ['', f"## Top-k on a real teacher: a CNN on `load_digits` (train accuracy {acc:.3f}), all 1,797 images", '',
            'Relative error of the `SoftTarget` value, and cosine between its gradient w.r.t. the student\'s logits and the '
            'exact one; "store": the store\'s dense reconstruction (top k exact, the rest at its log-mean-exp); "sparse": KL '
            'over the teacher\'s top k classes only, both sides renormalised.', '',
            '| k | T | student | exact loss | store: error | store: grad cos | sparse: error | sparse: grad cos |', '|---:|---:|---|---:|---:|---:|---:|---:|']
    out += [f"| {k} | {T:g} | {s} | {full:.4f} | {de:+.1%} | {dc:.3f} | {se:+.1%} | {sc:.3f} |" for k,T,s,full,de,dc,se,sc in topk]
    out += ['', f"Benchmark wall time: {time.time() - t_start:.0f} s"]
    text = '\n'.join(out) + '\n'
    print(text)
    if not args.quick: Path(args.out).write_text(text)

if __name__ == '__main__': main(parse_args())
