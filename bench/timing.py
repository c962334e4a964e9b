"Time per training or validation batch, measured inside the epochs, so that what is paid once per fit or epoch stays out"
from __future__ import annotations
import gc, statistics, time
import torch
from fastai.callback.core import Callback
from fasterai.distill.distillation_callback import KnowledgeDistillationCallback

def now(): return time.perf_counter(), time.process_time()  # wall; CPU time of this process (not the time it waited for a CPU)

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
