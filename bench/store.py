#!/usr/bin/env python
"""Benchmark of `TeacherStore`, the teacher-output store on disk, on the CPU. See bench/README.md.

    python bench/store.py            # full run, about 5 minutes on 2 cores; writes bench/store.md
    python bench/store.py --quick    # smoke run: every path, numbers not meaningful (writes nothing)

* **Fill**: `TeacherStore.fill(teacher, batches)` into a new store against plain teacher inference over the same
  batches, for a 10-class and a 1,000-class head (fp32, and fp16 for 1,000 classes). Target: within 10%.
* **Students from the store, teacher never loaded**: a fresh process (this script, `--child epochs-W`) trains one
  student for rounds of three epochs, adding and removing the callback: alone, with
  `KnowledgeDistillationCallback(None, SoftTarget, store=...)`, and with the same outputs in a `TeacherCache`. Target
  <= 1.03x, judged in parts inside training, from fastai's events (`timing.Stopwatch`): the time in the callback's own
  events, the extra forward (the teacher pre-hook, which holds the lookup) and the extra backward, over the student's
  batch alone. Peak memory: one fresh process per configuration (`--child rss-student`, `--child rss-store`).
* **Lookup**: `store(xb, None)` for one batch (keys, query, checksums and decoding) and its keys (`item_keys`),
  against one training step of the student. Target <= 2%.
* **Size** of a store per 1,000 items, for 10 and 1,000 classes, fp32, fp16 and top-k, and for ImageNet-1k.

SQLite against LMDB: `bench/store_lmdb.py`; the top-k reconstruction on a real teacher: `bench/store_topk.py`.
Synthetic 3x32x32 batches of 64 (`workload.batches`) served by a fastai `DataLoader` with `bs=None`; the resnet-like
CNNs of `workload.cnn`, students 16 and 32 channels wide at the first stage, teacher 48; one thread (`--threads`).
"""
from __future__ import annotations
import argparse, gc, json, os, platform, resource, shutil, statistics, subprocess, sys, tempfile, time, warnings
from contextlib import redirect_stdout
from pathlib import Path

warnings.filterwarnings('ignore')
import torch, torch.nn as nn, torch.nn.functional as F
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fasterai.distill.all import KnowledgeDistillationCallback, SoftTarget, TeacherStore, TeacherCache, item_keys
from workload import BS, cnn, macs, batches, silent
from timing import timed, cpu_model, Stopwatch
from memory import status_kib, reset_peak

# the default student (width 32) costs 12 MMACs per item, as much as resnet8, the smallest CIFAR student of the usual
# KD tables (mdistiller's); width 16 (3 MMACs) is timed too, as a student smaller than any of those
STUDENT_W, TEACHER_W, IMAGENET = 32, 48, 1_281_167
FULL  = dict(n_train=16, n_valid=2, rounds=30, fill_batches=16, fill_rounds=9, lookups=300, size_items=4000)
QUICK = dict(n_train=3, n_valid=1, rounds=2, fill_batches=3, fill_rounds=1, lookups=10, size_items=400)
CONFIGS = ('alone', 'store', 'memory')

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='smoke run: every path, tiny sizes, writes nothing')
    p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads (default 1)')
    p.add_argument('--dir', default=None, help='where the stores are written (default: a temporary folder in bench/)')
    p.add_argument('--out', default=str(Path(__file__).with_name('store.md')), help='the Markdown file written')
    p.add_argument('--widths', default='16,32', help='student widths for the epoch timings')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)  # internal: a measurement in a fresh process
    p.add_argument('--store', default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)

def timed_outputs(cls):
    "A subclass of the public `cls` (`TeacherStore`, `TeacherCache`) whose lookups add their seconds to `spent`"
    class Timed(cls):
        spent = 0.
        def __call__(self, xb, compute):
            t = time.perf_counter()
            try: return super().__call__(xb, compute)
            finally: self.spent += time.perf_counter() - t
    return Timed

def make_learner(train, valid, width=STUDENT_W, cbs=()):
    "The student, on the pre-batched data, printing nothing"
    torch.manual_seed(1)
    learn = Learner(DataLoaders(DataLoader(train, bs=None), DataLoader(valid, bs=None)), cnn(width),
                    loss_func=nn.CrossEntropyLoss(), cbs=list(cbs))
    learn.logger = silent  # the callback still adds and fills its columns
    return learn

def fit1(learn):
    "(wall, CPU) seconds of one `fit(1)`"
    with learn.no_bar(): return timed(lambda: learn.fit(1, 1e-3))

def kd(store): return KnowledgeDistillationCallback(None, SoftTarget, weight=0.5, store=store)

def quiet(f):
    "`f()` with stdout to /dev/null: the progress bar's text goes nowhere (its updates still run)"
    with open(os.devnull, 'w') as null, redirect_stdout(null): return f()

# ------------------------------------------------------------------------------------------------ the children

def child_rss(args, train, valid):
    "Peak memory of two fits of the student, alone or from the store"
    learn = make_learner(train, valid, cbs=[kd(TeacherStore(args.store, readonly=True))] if args.child == 'rss-store' else [])
    gc.collect()
    before, reset = status_kib('VmRSS') / 1024, reset_peak()
    fit1(learn); fit1(learn)
    teacher = any(isinstance(o, nn.Linear) and o.in_features == 4*TEACHER_W for o in gc.get_objects())
    return dict(reset=reset, hwm_fit=status_kib('VmHWM') / 1024, rss_before=before, teacher_in_process=teacher,
                maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

def child_epochs(args, cfg, train, valid):
    "Epochs of one student alone, from the store and from the same outputs in memory, timed per batch and in parts"
    width = int(args.child.split('-')[1])
    store = timed_outputs(TeacherStore)(args.store, readonly=True)
    memory = timed_outputs(TeacherCache)(256)  # the same outputs in memory: the callback and the keys without SQLite
    for xb, _ in train: memory([xb], lambda sub: store(sub, None))
    cbs = {'alone': None, 'store': kd(store), 'memory': kd(memory)}
    sw = Stopwatch(KnowledgeDistillationCallback.order, probe=lambda: store.spent + memory.spent)
    # one learner, whose callback changes from epoch to epoch: two learners differ by a few percent on their own
    # (where their tensors lie in memory), more than what is measured here
    learn = make_learner(train, valid, width, cbs=sw.cbs)
    def epoch(name):
        if cbs[name] is not None: learn.add_cb(cbs[name])
        sw.rows = []
        try: return fit1(learn), sw.rows
        finally:
            if cbs[name] is not None: learn.remove_cb(cbs[name])
    for name in CONFIGS: epoch(name)  # warm-up
    times, rows = [], {n: [] for n in CONFIGS}
    for r in range(cfg['rounds']):
        row = {}
        for name in CONFIGS[r % 3:] + CONFIGS[:r % 3]:
            row[name], got = epoch(name)
            rows[name] += got
        times.append(row)
    # one training step of the student, and a lookup of one batch, each in a loop of its own
    xb, yb = train[0]
    model, opt = learn.model.train(), torch.optim.Adam(learn.model.parameters())
    def step():
        loss = F.cross_entropy(model(xb), yb); loss.backward(); opt.step(); opt.zero_grad()
    store.watch(None)
    parts = dict(step=step, lookup=lambda: store([xb], None), keys=lambda: item_keys([xb]))
    per_batch = {}
    for name, f in parts.items():
        f()
        n = cfg['lookups'] if name != 'step' else max(cfg['lookups'] // 10, 3)
        per_batch[name] = statistics.median(timed(f)[0] for _ in range(n))
    return dict(times=times, rows=rows, hit_rate=store.epoch_hit_rate, per_batch=per_batch)

def child(args, cfg):
    "A measurement in a fresh process that never builds the teacher: its results as JSON on the last line of stdout"
    torch.set_num_threads(args.threads)
    train, valid = batches(cfg['n_train'], 0), batches(cfg['n_valid'], 1)
    print(json.dumps(child_rss(args, train, valid) if args.child.startswith('rss') else child_epochs(args, cfg, train, valid)))

def run_child(args, name, store):
    cmd = [sys.executable, __file__, '--child', name, '--store', str(store), '--threads', str(args.threads)] + (['--quick'] if args.quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    if out.returncode: raise RuntimeError(f"child {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

# ------------------------------------------------------------------------------------------------ the parent

def fill_rows(cfg, tmp):
    "Fill time against teacher inference over the same batches, end to end and in parts"
    rows = []
    for n_out, fmt in ((10, 'fp32'), (1000, 'fp32'), (1000, 'fp16')):
        torch.manual_seed(0)
        teacher, data = cnn(TEACHER_W, n_out=n_out).eval(), batches(cfg['fill_batches'], 2, n_out)
        def infer():
            with torch.no_grad():
                for xb, _ in data: teacher(xb)
        def fill():
            "A new store filled with `data`; opening and closing it are not timed"
            p = tmp/f'fill-{n_out}-{fmt}.db'
            for f in tmp.glob(p.name + '*'): f.unlink()
            with TeacherStore(p, fmt=fmt) as s: return quiet(lambda: timed(lambda: s.fill(teacher, data)))
        infer(); fill()  # warm-up
        res = [{'fill': fill(), 'infer': timed(infer)} if r % 2 else {'infer': timed(infer), 'fill': fill()} for r in range(cfg['fill_rounds'])]
        ratios = [[t['fill'][i] / t['infer'][i] for t in res] for i in (0, 1)]
        # in parts: one teacher batch, and what the store adds to it (keys, encoding, insert, commit of 64 new rows)
        with torch.no_grad(): outs = [teacher(xb) for xb, _ in data]
        store_s = []
        for r in range(cfg['fill_rounds']):
            with TeacherStore(tmp/f'put-{n_out}-{fmt}-{r}.db', fmt=fmt) as s:
                s([data[0][0]], lambda sub: [outs[0]])  # the first batch records the format
                store_s += [timed(lambda: s([data[i][0]], lambda sub: [outs[i]]))[1] for i in range(1, len(data))]
        with torch.no_grad(): teacher_s = [timed(lambda: teacher(xb))[1] for xb, _ in data]
        med = lambda k: statistics.median(t[k][0] for t in res)
        rows.append((f"{n_out} classes, {fmt}", med('infer'), med('fill'), *[(statistics.median(r), min(r), max(r)) for r in ratios],
                     statistics.median(teacher_s), statistics.median(store_s)))
    return rows

def size_rows(tmp, n):
    "KiB per 1,000 items (the file's size over `len(store)`), and the ImageNet-1k extrapolation for 1,000 classes"
    rows = []
    for n_out, fmts in ((10, [('fp32', None), ('fp16', None), ('fp16', 3)]),
                        (1000, [('fp32', None), ('fp16', None), ('fp32', 10), ('fp16', 10), ('fp16', 5)])):
        g = torch.Generator().manual_seed(0)
        X, logits = torch.randn(n, 8, generator=g), torch.randn(n, n_out, generator=g)*3
        for fmt, k in fmts:
            p = tmp/f'size-{n_out}-{fmt}-{k}.db'
            with TeacherStore(p, fmt=fmt, topk=k) as s:
                for i in range(0, n, 250): s([X[i:i+250]], lambda xb, i=i: [logits[i:i+250]])
                items = len(s)
            kib = p.stat().st_size / 2**10 / (items/1000)
            rows.append((n_out, fmt + (f", top {k}" if k else ''), kib, kib*IMAGENET/1000/2**20 if n_out == 1000 else None))
    return rows

def summaries(e):
    "From one student's epochs: per configuration, the medians (ms) and lower quartiles of its batches and their parts"
    med = lambda k, x: statistics.median(r[x] for r in e['rows'][k]) * 1e3
    q1 = lambda k: statistics.quantiles([r['batch'] for r in e['rows'][k]], n=4)[0] * 1e3
    s = {k: dict(batch=med(k, 'batch'), q1=q1(k), own=med(k, 'own'), lookup=med(k, 'probe'), fwd=med(k, 'forward'),
                 bwd=med(k, 'backward')) for k in CONFIGS}
    a = s['alone']
    for k in ('store', 'memory'):
        x = s[k]
        # the marks' own cost, measured with no callback between them, is taken off
        x.update(events=x['own'] - a['own'], xfwd=x['fwd'] - a['fwd'], xbwd=x['bwd'] - a['bwd'], vs=x['batch'] / a['batch'],
                 vs_q1=x['q1'] / a['q1'], epoch=[t[k][0] / t['alone'][0] for t in e['times']])
        x['parts'] = 1 + (x['events'] + max(x['xfwd'], 0) + max(x['xbwd'], 0)) / a['batch']
    return s

def report(args, cfg, head, fills, eps, rss, sizes):
    "The Markdown report"
    S = {w: summaries(e) for w, e in eps.items()}
    ref = eps.get(STUDENT_W) or eps[max(eps)]  # the default student's, or the widest one timed
    pb, a, b = ref['per_batch'], rss['rss-student'], rss['rss-store']
    met = lambda ok: 'met' if ok else '**not met**'
    ok = lambda v, target: f"**{v:.3f}**" if v > target else f"{v:.3f}"
    parts = [1 + sb/tb for *_, tb, sb in fills]
    out = ['# `TeacherStore` benchmark', '', f"Output of `{' '.join(['python', 'bench/store.py'] + sys.argv[1:])}`, "
           f"{time.strftime('%Y-%m-%d')}.", '', *head, '', '## Summary', '',
           f"- Fill within 10% of teacher inference, in parts: {met(max(parts) <= 1.10)} ({min(parts):.3f}-{max(parts):.3f}); "
           f"end to end (CPU time): {', '.join(f'{c[0]:.3f}' for *_, c, _, _ in fills)}.",
           "- Student from the store vs alone (target <= 1.03), in parts (the callback's events, the extra forward, which "
           "holds the teacher pre-hook and its lookup, and the extra backward, over the student's batch alone): "
           + ', '.join(f"width {w}: {s['store']['parts']:.3f} ({met(s['store']['parts'] <= 1.03)})" for w, s in S.items())
           + "; with the outputs in memory: " + ', '.join(f"{s['memory']['parts']:.3f}" for s in S.values()) + '.',
           "- End to end, median training batch (bursts of a shared machine move these by several percent): "
           + ', '.join(f"width {w}: {s['store']['vs']:.3f}" for w, s in S.items()) + '.',
           f"- Peak RSS vs the student alone: {b['maxrss'] / a['maxrss']:.3f} ({met(b['maxrss'] / a['maxrss'] <= 1.03)}).",
           f"- Lookup of one batch vs a student step, each in a loop of its own: {100*pb['lookup']/pb['step']:.2f}% "
           f"({met(pb['lookup']/pb['step'] <= 0.02)}); inside training: "
           + ', '.join(f"{s['store']['lookup']:.2f} ms, {100*s['store']['lookup']/s['alone']['batch']:.1f}% of the width-{w} "
                       "student's batch" for w, s in S.items()) + '.', '',
           f"## Fill: `TeacherStore.fill(teacher, batches)` vs teacher inference over the same {cfg['fill_batches']} batches (target <= 1.10)", '',
           f"Median of {cfg['fill_rounds']} rounds (order alternating), a new store each time. In parts: CPU time of one teacher "
           "batch, and of what the store adds to it (keys, encoding, insert and commit of 64 rows).", '',
           '| teacher head, rows | inference s (wall) | fill s (wall) | fill / inference, wall (range) | CPU time (range) | '
           'in parts: teacher batch ms | + store ms | (teacher + store) / teacher |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    out += [f"| {n} | {ti:.3f} | {tf:.3f} | {ok(r[0], 1.10)} ({r[1]:.3f}-{r[2]:.3f}) | {ok(c[0], 1.10)} ({c[1]:.3f}-{c[2]:.3f}) | "
            f"{tb*1e3:.1f} | {sb*1e3:.2f} | {ok(1 + sb/tb, 1.10)} |" for n, ti, tf, r, c, tb, sb in fills]
    out += ['', '## Students from the store, teacher never loaded (fresh processes)', '',
            f"One learner per width, {cfg['rounds']} rounds of three epochs (order rotating): alone, with "
            "`KnowledgeDistillationCallback(None, SoftTarget, store=...)`, and with the same outputs in a `TeacherCache` "
            f"(\"memory\"). {cfg['n_train']} batches per epoch, medians (and lower quartiles) over every batch; epochs: "
            "median of the per-round ratios (range).", '',
            '| student | MMACs/item | batch alone, ms | store / alone (lower quartile) | memory / alone | epoch, store / alone (range) |',
            '|---:|---:|---:|---:|---:|---:|']
    for w, s in S.items():
        st, er = s['store'], s['store']['epoch']
        out += [f"| width {w} | {macs(cnn(w))/1e6:.1f} | {s['alone']['batch']:.2f} | {ok(st['vs'], 1.03)} ({st['vs_q1']:.3f}) | "
                f"{s['memory']['vs']:.3f} ({s['memory']['vs_q1']:.3f}) | {statistics.median(er):.3f} ({min(er):.3f}-{max(er):.3f}) |"]
    out += ['', "In parts, from fastai's events (`timing.Stopwatch`): medians per training batch in ms; the callback's events "
            "(marks just before and after its order), the extra forward and backward against the student alone, and the "
            "lookup (a subclass of the store that times its calls).", '',
            '| student | batch alone | events, store | + forward | + backward | lookup | store: parts / batch alone | '
            'memory: events | + forward | lookup | memory: parts |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for w, s in S.items():
        st, m = s['store'], s['memory']
        out += [f"| width {w} | {s['alone']['batch']:.2f} | {st['events']:.2f} | {st['xfwd']:+.2f} | {st['xbwd']:+.2f} | "
                f"{st['lookup']:.2f} | {ok(st['parts'], 1.03)} | {m['events']:.2f} | {m['xfwd']:+.2f} | {m['lookup']:.2f} | {m['parts']:.3f} |"]
    out += ['', '| peak memory | student alone | student + store | ratio | target |', '|---|---:|---:|---:|---:|',
            f"| peak RSS of the whole process, MB | {a['maxrss']:.0f} | {b['maxrss']:.0f} | {ok(b['maxrss'] / a['maxrss'], 1.03)} | <= 1.03 |"]
    if a['reset'] and b['reset']:
        out += [f"| peak RSS during fit (VmHWM reset before it), MB | {a['hwm_fit']:.0f} (+{a['hwm_fit'] - a['rss_before']:.0f}) | "
                f"{b['hwm_fit']:.0f} (+{b['hwm_fit'] - b['rss_before']:.0f}) | {ok(b['hwm_fit'] / a['hwm_fit'], 1.03)} | <= 1.03 |"]
    out += ['', f"Store hit rate in the timed epochs: {ref['hit_rate']:.3f}. A teacher in the students' processes: "
            f"{a['teacher_in_process'] or b['teacher_in_process']}.", '',
            "## Lookup of one batch (64 items), against one training step of the student (target <= 2%)", '',
            '| | ms (median) | % of a student step |', '|---|---:|---:|',
            f"| student step (forward, backward, Adam) | {pb['step']*1e3:.2f} | 100 |"]
    for k, name in (('lookup', '**`store(xb, None)`: all of a lookup**'), ('keys', 'its keys: `item_keys` (XXH3-128 of the inputs)')):
        out += [f"| {name} | {pb[k]*1e3:.3f} | {100*pb[k]/pb['step']:.2f} |"]
    q = pb['lookup'] - pb['keys']
    out += [f"| the rest: SQLite query, checksums and decoding | {q*1e3:.3f} | {100*q/pb['step']:.2f} |",
            '', f"## Size per 1,000 items (random logits, {cfg['size_items']} items per store)", '',
            '| classes | stored | KiB per 1,000 items | bytes per item | ImageNet-1k train (1,281,167 items), GiB |', '|---:|---|---:|---:|---:|']
    out += [f"| {n} | {s} | {kib:.1f} | {kib*1.024:.0f} | {'' if gib is None else f'{gib:.2f}'} |" for n, s, kib, gib in sizes]
    return out

def main(args):
    cfg = QUICK if args.quick else FULL
    if args.child: return child(args, cfg)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    tmp = Path(args.dir or tempfile.mkdtemp(dir=Path(__file__).parent, prefix='store-bench-'))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        import fastai, sqlite3
        head = [f"- machine: {cpu_model()}, {os.cpu_count()} cores; torch.set_num_threads({args.threads}) -> {torch.get_num_threads()}; "
                f"load average {os.getloadavg()[0]:.1f}",
                f"- torch {torch.__version__}, fastai {fastai.__version__}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
                f"- student {macs(cnn(STUDENT_W))/1e6:.2f} MMACs/item, teacher {macs(cnn(TEACHER_W))/1e6:.2f} MMACs/item; "
                f"synthetic 3x32x32, bs={BS}, {cfg['n_train']} train + {cfg['n_valid']} valid batches; store in {tmp}"]
        print('\n'.join(head), flush=True)
        # the store the students read, filled here with the teacher; the children never build it
        store_path = tmp/'students.db'
        torch.manual_seed(0)
        with TeacherStore(store_path) as s: quiet(lambda: s.fill(cnn(TEACHER_W), batches(cfg['n_train'], 0)))
        print('fill...', flush=True)
        fills = fill_rows(cfg, tmp)
        print('students (fresh processes)...', flush=True)
        eps = {int(w): run_child(args, f'epochs-{w}', store_path) for w in args.widths.split(',')}
        rss = {n: run_child(args, n, store_path) for n in ('rss-student', 'rss-store')}
        print('sizes...', flush=True)
        sizes = size_rows(tmp, cfg['size_items'])
    finally:
        if not args.dir: shutil.rmtree(tmp, ignore_errors=True)
    text = '\n'.join(report(args, cfg, head, fills, eps, rss, sizes) + ['', f"Benchmark wall time: {time.time() - t_start:.0f} s"]) + '\n'
    print(text)
    if not args.quick: Path(args.out).write_text(text)

if __name__ == '__main__': main(parse_args())
