"Time per training or validation batch, measured inside the epochs, so that what is paid once per fit or epoch stays out"
from __future__ import annotations
import gc, platform, statistics, time
import torch
from fastai.callback.core import Callback
from fasterai.distill.distillation_callback import KnowledgeDistillationCallback

def now(): return time.perf_counter(), time.process_time()  # wall; CPU time of this process (not the time it waited for a CPU)

def timed(f):
    "(wall, CPU) seconds of `f()`"
    t0 = now(); f(); t1 = now()
    return t1[0] - t0[0], t1[1] - t0[1]

def cpu_model():
    "The CPU's name, family and model, and its vector extensions: a VM's name alone may not tell which CPU it is"
    try: info = {k.strip(): v.strip() for k, v in (l.split(':', 1) for l in open('/proc/cpuinfo').read().split('\n\n')[0].splitlines() if ':' in l)}
    except OSError: return platform.processor() or platform.machine()
    isa = [n for f, n in (('avx512f', 'AVX-512'), ('amx_tile', 'AMX'), ('avx2', 'AVX2'), ('asimd', 'NEON')) if f in info.get('flags', info.get('Features', '')).split()]
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}; {', '.join(isa)})"

def per_batch(marks):
    "(wall, CPU) medians of the intervals between consecutive marks: one interval is one whole batch"
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]
    return tuple(statistics.median(s[k] for s in steps) for k in (0, 1))

class BatchClock(Callback):
    "Marks the start of every batch (before any other callback): from one mark to the next, all one batch costs, nothing else"
    order = -100
    def before_train(self): self.train = []
    def before_validate(self): self.valid = []
    def before_batch(self): (self.train if self.training else self.valid).append(now())
    def after_train(self): self.train_end = now()
    def after_validate(self): self.valid_end = now()

def clock(learn): return next(c for c in learn.cbs if isinstance(c, BatchClock))

def fit_epoch(learn):
    "One `fit(1)`: the training epoch's (wall, CPU) per batch, and the fit's CPU time outside its batches"
    gc.collect()
    t0 = now()
    learn.fit(1, 1e-3)
    t1, c = now(), clock(learn)
    return per_batch(c.train), (t1[1] - t0[1]) - (c.train_end[1] - c.train[0][1]) - (c.valid_end[1] - c.valid[0][1])

def teacher_pass(teacher, batches):
    "The teacher alone over the training batches (eval, no autograd): (wall, CPU) per batch"
    teacher.eval()
    marks = [now()]
    with torch.no_grad():
        for xb, _ in batches: teacher(xb); marks.append(now())
    return per_batch(marks)

def fresh_cache(learn, w):
    "Replace the learner's callback by a new one: an empty cache, through the public API"
    learn.remove_cb(KnowledgeDistillationCallback)
    learn.add_cb(w.callback('kd_cache_fill'))

def rotate(xs, k): k %= len(xs); return xs[k:] + xs[:k]

def time_epochs(w, names, rounds, log=print):
    """For each configuration in `names`, `rounds` trios: one training epoch each of the configuration, of the student alone and
    of the teacher alone, the orders rotated. Returns {name: [per-round dict]} (times per batch as (wall, CPU)), {name: error}"""
    learners, errors = {}, {}
    for n in ['student', *names]:  # warm-up on the same shapes; the cached configuration fills its cache here
        try:
            learn = learners[n] = w.learner(n, cbs=[BatchClock()])
            if n == 'kd_cache_fill': fresh_cache(learn, w)
            learn.fit(1, 1e-3); learn.validate()
        except Exception as e:  # a configuration the library no longer accepts is reported, the others still run
            if n == 'student': raise
            errors[n] = f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]; learners.pop(n, None)
    names = [n for n in names if n not in errors]
    teacher_pass(w.teacher, w.train); teacher_pass(w.teacher_cl, w.train)
    gc.collect(); gc.freeze()  # what exists now lives to the end: the collections before each measurement are quick
    out = {n: [] for n in names}
    for r in range(rounds):
        for i, n in enumerate(rotate(names, r)):
            got = {}
            for m in rotate(['student', 'teacher', n], r + i):
                if m == 'teacher': got[m] = teacher_pass(w.teacher, w.train); continue
                if m == 'kd_cache_fill': fresh_cache(learners[m], w)
                got[m], got[m + ' fit'] = fit_epoch(learners[m])
            out[n].append(dict(kd=got[n], student=got['student'], teacher=got['teacher'],
                               extra=got[n + ' fit'] - got['student fit']))
        log(f'round {r + 1}/{rounds}: ' + ', '.join(f'{n} {1e3 * out[n][-1]["kd"][0]:.1f}' for n in names) + ' ms/batch', flush=True)
    return out, errors

def time_validation(w, names, rounds):
    "Validation per batch with each configuration's callback attached / the student alone, run back to back: {name: [ratio (wall, CPU)]}"
    learners = {n: w.learner(n, cbs=[BatchClock()]) for n in ['student', *names]}
    for learn in learners.values(): learn.validate()
    out = {n: [] for n in names}
    for r in range(rounds):
        for n in rotate(names, r):
            got = {}
            for m in ([n, 'student'] if r % 2 else ['student', n]):
                learners[m].validate()
                got[m] = per_batch(clock(learners[m]).valid)
            out[n].append(tuple(got[n][k] / got['student'][k] for k in (0, 1)))
    return out

def channels_last_costs(w, rounds):
    "CPU time of the teacher's pass per batch with default / channels-last weights, and their ratio"
    default, cl = [], []
    for _ in range(rounds): default.append(teacher_pass(w.teacher, w.train)[1]); cl.append(teacher_pass(w.teacher_cl, w.train)[1])
    med = statistics.median
    return med(default), med(cl), med([c / d for c, d in zip(cl, default)])

class Mark(Callback):
    "One mark of a `Stopwatch` at its `order`: each event of a training batch that reaches this place is noted there"
    run_valid = False
    def __init__(self, sw, where, order): self.sw, self.where, self.order = sw, where, order
    def before_batch(self): self.sw.mark(self.where, 'before_batch')
    def after_pred(self): self.sw.mark(self.where, 'after_pred')
    def after_loss(self): self.sw.mark(self.where, 'after_loss')
    def after_backward(self): self.sw.mark(self.where, 'after_backward')
    def after_step(self): self.sw.mark(self.where, 'after_step')
    def after_batch(self): self.sw.mark(self.where, 'after_batch')

class Stopwatch:
    """Per training batch, from fastai's events alone: the whole batch (first `before_batch` to last `after_batch`), the
    model's forward (with what its hooks run), the backward pass, the time spent in the events of the callbacks at
    `order` (between two marks just before and after it: nothing else may sit there), and how much `probe()` grew.
    Add `sw.cbs` to a learner; each batch appends a dict to `sw.rows`"""
    def __init__(self, order, probe=lambda: 0.):
        self.probe, self.rows = probe, []
        self.cbs = [Mark(self, w, o) for w, o in (('first', -1000), ('open', order - 0.5), ('close', order + 0.5), ('last', 1000))]

    def mark(self, where, event):
        t = time.perf_counter()
        if where == 'open': self.t_open = t
        elif where == 'close': self.row['own'] += t - self.t_open
        elif where == 'first':
            if event == 'before_batch': self.t0, self.row = t, dict(own=0., probe=self.probe())
            elif event == 'after_pred': self.row['forward'] = t - self.t_fwd
            elif event == 'after_backward': self.row['backward'] = t - self.t_bwd
        elif event == 'before_batch': self.t_fwd = t  # the last callback before the forward
        elif event == 'after_loss': self.t_bwd = t    # the last callback before the backward pass
        elif event == 'after_batch':
            self.row.update(batch=t - self.t0, probe=self.probe() - self.row['probe'])
            self.rows.append(self.row)
