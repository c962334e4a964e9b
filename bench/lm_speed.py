#!/usr/bin/env python
"""Token-level distillation of a language model on the CPU: time per batch and peak memory, online and from a top-k store.

    python bench/lm_speed.py               # about 3 minutes on a quiet 2-core machine
    python bench/lm_speed.py --quick       # smoke run: every path once, numbers not meaningful
    python bench/lm_speed.py --profile     # also: where a batch's time goes, online and from the store (cProfile)
    python bench/lm_speed.py --student 256,512   # a student whose own compute, not the vocabulary's softmax, dominates

The data are the tutorial's (nbs/tutorials/distill/language_model.ipynb): windows of 32 tokens of the standard
library's docstrings, batches of 64, `WordLSTM` models, `CrossEntropyLossFlat()`, `SoftTarget(T=1)` weighted 0.5.

- Online: `KnowledgeDistillationCallback(teacher, ...)` per batch against the ideal, the student's batch (the same
  `Learner` without the callback) plus one teacher pass over the same batch (eval, no_grad), measured as
  bench/speed.py does with bench/timing.py: time per batch inside the epoch, trios rotated, medians over rounds.
  Vocabulary 2,000, teacher WordLSTM(96, 192), student WordLSTM(32, 32), as in the tutorial. Target: ≤ 1.05×.
- Store: a fit from `TeacherStore(fmt='fp16', topk=32)` with `teacher=None` against the student alone, per batch
  (64 × 32 tokens), vocabulary 8,000. Target: ≤ 1.10×. Peak RSS of the same two fits, each in a fresh process
  (bench/memory.py's method: VmHWM reset just before `fit`): target ≤ 1.05×.
Public names only. Prints Markdown."""
from __future__ import annotations
import argparse, contextlib, cProfile, gc, io, json, os, platform, pstats, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
from fastai.basics import Learner, DataLoaders, CrossEntropyLossFlat, partial, set_seed
from fastai.callback.all import ProgressCallback  # noqa: F401  (Learner.no_bar)
from fasterai.distill.all import KnowledgeDistillationCallback, SoftTarget, TeacherStore
from fasterai.distill.examples import docstring_lm, WordLSTM
import timing as T, memory as M

SL, BS = 32, 64
ONLINE = dict(vocab=2000, teacher=(96, 192), student=(32, 32))
STORE = dict(vocab=8000, teacher=(96, 192), student=(32, 32), topk=32)
FULL = dict(n_train=8, n_valid=2, rounds=8)
QUICK = dict(n_train=2, n_valid=1, rounds=1)
soft = partial(SoftTarget, T=1.)

class Work:
    "The batches, the teacher and the learners of one vocabulary size, built from public names"
    def __init__(self, vocab, teacher, student, n_train, n_valid, topk=None, path=None):
        tr, va, _ = docstring_lm(vocab, SL)
        self.tr, self.va, self.vocab, self.student = tr[:n_train * BS], va[:n_valid * BS], vocab, student
        set_seed(0); self.teacher = WordLSTM(vocab, *teacher).eval()
        self.path, self.topk = path, topk

    def dls(self): set_seed(0); return DataLoaders.from_dsets(self.tr, self.va, bs=BS, num_workers=0)
    def kd(self, name):
        if name == 'online': return KnowledgeDistillationCallback(self.teacher, soft, weight=0.5)
        if name == 'store': return KnowledgeDistillationCallback(None, soft, weight=0.5, store=TeacherStore(self.path, readonly=True))
        return None

    def learner(self, name, cbs=()):
        "The student's `Learner`; `name` is 'student' (alone), 'online' or 'store'"
        set_seed(0)
        kd = self.kd(name)
        learn = Learner(self.dls(), WordLSTM(self.vocab, *self.student), CrossEntropyLossFlat(), cbs=[*cbs, *([kd] if kd else [])])
        learn.create_opt()
        return learn

    def fill(self):
        "The store, filled once by the teacher over the training windows"
        self.path = self.path or Path(tempfile.mkdtemp()) / f'top{self.topk}.db'
        with contextlib.redirect_stdout(io.StringIO()):  # fill's progress bar
            TeacherStore(self.path, fmt='fp16', topk=self.topk).fill(self.teacher, self.dls().train)
        return self

def silent(learn):
    "`learn` without its progress bar and its printed table"
    learn.remove_cbs([c for c in learn.cbs if type(c).__name__ == 'ProgressCallback'])
    learn.logger = lambda *args, **kwargs: None
    return learn

def time_online(w, rounds):
    "Per round: (KD, student alone, teacher pass) per batch as (wall, CPU), the orders rotated"
    learners = {n: silent(w.learner(n, cbs=[T.BatchClock()])) for n in ('student', 'online')}
    for l in learners.values(): T.fit_epoch(l)  # warm-up
    T.teacher_pass(w.teacher, learners['student'].dls.train)
    out = []
    for r in range(rounds):
        got = {}
        for m in T.rotate(['student', 'teacher', 'online'], r):
            got[m] = T.teacher_pass(w.teacher, learners['student'].dls.train) if m == 'teacher' else T.fit_epoch(learners[m])[0]
        out.append(got)
    return out

def time_store(w, rounds):
    "Per round: (store fit, student alone) per batch as (wall, CPU), in alternating order"
    learners = {n: silent(w.learner(n, cbs=[T.BatchClock()])) for n in ('student', 'store')}
    for l in learners.values(): T.fit_epoch(l)
    out = []
    for r in range(rounds):
        out.append({m: T.fit_epoch(learners[m])[0] for m in (['store', 'student'] if r % 2 else ['student', 'store'])})
    return out

def profile(w, name, top=12):
    "The functions where one epoch of `name` spends its time, by own time"
    learn = silent(w.learner(name)); learn.fit(1, 1e-3)
    pr = cProfile.Profile(); pr.enable(); learn.fit(1, 1e-3); pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('tottime').print_stats(top)
    lines = [l for l in s.getvalue().splitlines() if l.strip()]
    start = next(i for i, l in enumerate(lines) if l.strip().startswith('ncalls'))
    return '\n'.join(lines[start:start + top + 1])

def memory_child(name, path, n_train, epochs):
    "Peak RSS of one fit in this fresh process: the student alone or from the store (no teacher either way)"
    torch.set_num_threads(1)
    w = Work(**{k: v for k, v in STORE.items() if k != 'topk'}, n_train=n_train, n_valid=1, path=path)
    w.teacher = None
    learn = silent(w.learner(name))
    gc.collect()
    before, reset = M.status_kib('VmRSS'), M.reset_peak()
    learn.fit(epochs, 1e-3)
    return dict(config=name, peak_kib=M.status_kib('VmHWM') if reset else None, before_kib=before, reset=reset)

def memory(path, n_train, epochs=2):
    "{name: memory_child(...)} for the student alone and the store fit, each in a fresh process"
    out = {}
    for name in ('student', 'store'):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), '--memory', name, '--path', str(path), '--n-train', str(n_train),
                            '--epochs', str(epochs), '--student', ','.join(map(str, STORE['student']))], capture_output=True, text=True)
        line = next((l for l in r.stdout.splitlines()[::-1] if l.startswith('{')), None)
        if r.returncode or line is None: raise RuntimeError(f'memory run {name} failed:\n{r.stderr[-3000:]}')
        out[name] = json.loads(line)
    return out

def least(n_rows, n_classes, rounds=9):
    "CPU time of what any exact KL over the whole vocabulary adds to a step: one softmax over the student's logits, into a new tensor"
    z, ts = torch.randn(n_rows, n_classes), []
    for _ in range(rounds + 1):
        t0 = time.process_time(); torch.softmax(z, 1); ts.append(time.process_time() - t0)
    return statistics.median(ts[1:])

def spread(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f'{statistics.median(xs):.3f} ({q[0]:.2f}–{q[2]:.2f})'

def main(a):
    from fastai import __version__ as fastai_version
    cfg = dict(QUICK if a.quick else FULL, **({'rounds': a.rounds} if a.rounds else {}))
    torch.set_num_threads(1)
    t0, load0, med, fails = time.perf_counter(), os.getloadavg(), statistics.median, []
    print('# Token-level distillation of a language model: cost per batch' + (' (--quick: numbers not meaningful)' if a.quick else ''))
    print(f"\n- `python bench/lm_speed.py {' '.join(sys.argv[1:])}`".rstrip())
    print(f'- CPU: {T.cpu_model()}, {len(os.sched_getaffinity(0))} usable cores; torch.get_num_threads() = 1; torch {torch.__version__} '
          f'(CPU kernels: {torch.backends.cpu.get_cpu_capability()}), fastai {fastai_version}, Python {platform.python_version()}')
    print(f"- batches of {BS} windows × {SL} tokens, {cfg['n_train']} training batches an epoch, {cfg['rounds']} rounds; SoftTarget(T=1), weight 0.5")

    w = Work(**{k: v for k, v in ONLINE.items()}, n_train=cfg['n_train'], n_valid=cfg['n_valid'])
    on = time_online(w, cfg['rounds'])
    def ratio(r, k): return r['online'][k] / (r['student'][k] + r['teacher'][k])
    r_on = [ratio(r, 1) for r in on]
    print(f"\n## Online, vocabulary {ONLINE['vocab']:,}: teacher WordLSTM{ONLINE['teacher']}, student WordLSTM{ONLINE['student']}\n")
    print('| per batch | CPU ms | wall ms |\n|---|---:|---:|')
    for label, f in (('student alone', lambda r, k: r['student'][k]), ('teacher pass (eval, no_grad)', lambda r, k: r['teacher'][k]),
                     ('ideal = student + teacher pass', lambda r, k: r['student'][k] + r['teacher'][k]), ('online KD', lambda r, k: r['online'][k])):
        print(f'| {label} | {1e3*med([f(r, 1) for r in on]):.1f} | {1e3*med([f(r, 0) for r in on]):.1f} |')
    print(f"\nOnline KD × ideal, CPU (≤ 1.05): {spread(r_on)}; wall: {med([ratio(r, 0) for r in on]):.3f}")
    if med(r_on) > 1.05: fails.append(f'online {med(r_on):.3f} × ideal > 1.05')
    fl, ideal = least(BS * SL, ONLINE['vocab']), med([r['student'][1] + r['teacher'][1] for r in on])
    print(f"\nThe least a KL over the vocabulary adds (the student's and the teacher's softmax over ({BS * SL}, {ONLINE['vocab']:,}) "
          f"logits): {2e3*fl:.1f} ms CPU, so no such term is under {(ideal + 2*fl) / ideal:.3f} × the ideal here")

    s = Work(**{k: v for k, v in STORE.items() if k != 'topk'}, n_train=cfg['n_train'], n_valid=cfg['n_valid'], topk=STORE['topk']).fill()
    st = time_store(s, cfg['rounds'])
    r_st = [r['store'][1] / r['student'][1] for r in st]
    print(f"\n## From a store, vocabulary {STORE['vocab']:,}: `TeacherStore(fmt='fp16', topk={STORE['topk']})`, student WordLSTM{STORE['student']}, no teacher\n")
    print('| per batch | CPU ms | wall ms | per token, CPU µs |\n|---|---:|---:|---:|')
    for m, label in (('student', 'student alone'), ('store', 'from the store')):
        c = med([r[m][1] for r in st])
        print(f"| {label} | {1e3*c:.1f} | {1e3*med([r[m][0] for r in st]):.1f} | {1e6*c/(BS*SL):.2f} |")
    print(f"\nStore fit × student alone, CPU (≤ 1.10): {spread(r_st)}; wall: {med([r['store'][0] / r['student'][0] for r in st]):.3f}; "
          f"the file: {TeacherStore(s.path, readonly=True).nbytes / 2**20:.1f} MiB for {len(s.tr):,} windows")
    if med(r_st) > 1.10: fails.append(f'store {med(r_st):.3f} × student > 1.10')
    fl, st_ms = least(BS * SL, STORE['vocab']), med([r['student'][1] for r in st])
    print(f"\nThe least an exact term over the vocabulary adds (one softmax over the student's ({BS * SL}, {STORE['vocab']:,}) logits, "
          f"into a new tensor): {1e3*fl:.1f} ms CPU, so no such term is under {(st_ms + fl) / st_ms:.3f} × the student alone here")

    if not a.no_memory:
        mem = memory(s.path, cfg['n_train'])
        p = {n: mem[n]['peak_kib'] for n in mem}
        x = p['store'] / p['student']
        print(f"\nPeak RSS in a fresh process, 2 epochs (≤ 1.05): student alone {p['student']/1024:.0f} MB "
              f"(+{(p['student'] - mem['student']['before_kib'])/1024:.0f} over pre-fit), from the store {p['store']/1024:.0f} MB "
              f"(+{(p['store'] - mem['store']['before_kib'])/1024:.0f}): × {x:.3f}")
        if x > 1.05: fails.append(f'peak RSS {x:.3f} × student > 1.05')

    if a.profile or fails:
        for name, work in (('online', w), ('store', s)):
            print(f'\n### Where one epoch goes: {name} (cProfile, own time)\n\n```\n{profile(work, name)}\n```')
    verdict = 'not evaluated (--quick).' if a.quick else 'all met.' if not fails else 'NOT met: ' + '; '.join(fails)
    print(f'\nTargets: {verdict}\nLoad average (1 min) at start / end: {load0[0]:.1f} / {os.getloadavg()[0]:.1f}; '
          f'wall time {time.perf_counter() - t0:.0f} s.')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    for flag, what in (('--quick', 'smoke run: every path once, numbers not meaningful'), ('--no-memory', 'skip the peak-memory processes'),
                       ('--profile', 'print where an epoch spends its time, even when the targets are met')):
        p.add_argument(flag, action='store_true', help=what)
    p.add_argument('--rounds', type=int, help=f"timing rounds (default {FULL['rounds']})")
    p.add_argument('--student', help="the student's embedding and hidden sizes, as E,H (default 32,32, the tutorial's)")
    p.add_argument('--memory', help=argparse.SUPPRESS); p.add_argument('--path', help=argparse.SUPPRESS)
    p.add_argument('--n-train', type=int, default=FULL['n_train'], help=argparse.SUPPRESS)
    p.add_argument('--epochs', type=int, default=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.student: ONLINE['student'] = STORE['student'] = tuple(int(n) for n in a.student.split(','))
    if a.memory: print(json.dumps(memory_child(a.memory, a.path, a.n_train, a.epochs)))
    else: main(a)
