#!/usr/bin/env python
"""Speed and memory benchmark of `KnowledgeDistillationCallback` on the CPU.

    .venv/bin/python bench/speed.py            # full run, about 2 minutes on 2 cores
    .venv/bin/python bench/speed.py --quick    # smoke run, about 20 seconds

The ideal cost of a distillation epoch is the student trained alone plus one inference pass of the teacher
over the same training batches. This script measures, in one process, the epoch time (train + valid,
`learn.fit(1)`) of:

* the student alone, and the teacher alone (eval mode, `no_grad`, over the same training batches);
* KD on logits (`SoftTarget`), the same with `channels_last=True` (the teacher runs with channels-last
  weights; the ideal keeps the teacher as given), on three feature pairs (`Attention`), and on both at once, written two ways:
  one loss function `def combined(**kw): return SoftTarget(**kw) + Attention(**kw)`, and the callback's
  list of losses `loss=[SoftTarget, Attention]` (both terms in one teacher pass);
* KD with the teacher-output cache (`cache_mb=`): its first epoch, which fills an empty cache (emptied before
  each measurement), and its later epochs, which read it.

In every round, each KD configuration runs next to its own student epoch and teacher pass (the order of the
configurations, and the order within each trio, rotate from round to round), and its ratio to the ideal is
taken within that trio, so that load which comes and goes on a shared machine mostly slows both sides of a
ratio; the median over the rounds is shown (the times shown are medians too). Each KD configuration also gets a
validation ratio (`learn.validate()` with the callback attached vs the student alone, each pair run back to
back; with the default `valid_distill=False` the teacher does not run there) and a peak-memory ratio.
Targets: epoch <= 1.05x the ideal, validation <= 1.02x, peak memory <= 1.05x; the full cache's later epochs
<= 1.10x the student alone.

Peak memory is measured in a fresh subprocess per configuration (this script with `--config NAME`), since the
peak resident set size only grows. Each holds the teacher and has run it once, the student-only one included.
The peak is VmHWM after resetting it through /proc/self/clear_refs just before `fit` (so that the import of
torch does not mask it), or `ru_maxrss` where that reset is not available.

Details that matter for the numbers:
* `torch.set_num_threads(--threads)`, 1 by default, printed in the header. One thread makes the ratios
  reproducible from machine to machine and robust to other load: with these small convolutions, two OpenMP
  threads on a shared 2-core machine were both slower and several times noisier than one. `--threads 2` (or
  more) measures the multi-threaded case, where the compute is faster and a fixed Python overhead weighs more.
* The progress bar is removed (`learn.no_bar()`) and the logger replaced by a silent function, so no printing
  is timed. Unlike `learn.no_logging()`, a silent logger still lets the callback add and fill its loss columns
  (`log_terms=True`, the default), so its default per-batch bookkeeping is part of the timing.
* The data are synthetic tensors, batched once in advance and served by a fastai `DataLoader` with `bs=None`,
  so data loading is close to free and does not hide the callback's overhead. The teacher-inference row loops
  over the same batches directly.
* The models are plain ResNet-like CNNs (a stem that halves the resolution, three stages of two 3x3 conv
  blocks); the teacher is the same layout 3x wider, about 10x the student's MACs (counted by forward hooks on
  the Conv/Linear layers; printed). The feature pairs are the three stages' outputs. What a feature loss adds
  to an epoch depends on the size of the maps it reads relative to the compute that made them: on a student
  with one conv per stage and no downsampling stem (maps 4x larger for the same MACs), Attention on three
  pairs cost 1.09-1.14x the ideal (`--layout flat`; see the README).
* Every configuration is warmed up first (one short fit and one validation, same shapes); the cached
  configuration's cache is filled by a full warm-up epoch, so its later-epoch row reads a full cache.
  A configuration that raises is reported as "error" with its message, and the others still run.
* The timings run with glibc told to keep the memory it frees (`MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`,
  `MALLOC_TOP_PAD_`; the script restarts itself with them). With the defaults, glibc hands the megabytes of
  each batch's activations back to the system and page-faults them in again at the next batch: on the 2-core
  VM this was measured on, that cost tens of thousands of page faults per epoch, 10-20% of the epoch, in bursts
  that made the ratios swing by +-5% from run to run. It slows every configuration (the teacher pass alone
  included), not the callback in particular; `--default-malloc` measures with the defaults. The peak-memory
  runs always use the defaults, so that they report the memory a user's process sees.
* `--quick` exercises every code path with tiny epochs and measures the peak memory of two configurations
  only: its numbers are not meaningful.
"""
from __future__ import annotations
import argparse, gc, json, os, platform, resource, statistics, subprocess, sys, time, warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

warnings.filterwarnings('ignore')
import torch
import torch.nn as nn

# ---------------------------------------------------------------------------------------------------------- setup

FULL  = dict(n_train=6, n_valid=3, rounds=10, val_rounds=30, mem_train=8, mem_epochs=2, mem_repeats=1)
QUICK = dict(n_train=4, n_valid=2, rounds=2, val_rounds=3,  mem_train=2, mem_epochs=2, mem_repeats=1)
QUICK_MEMORY = ('student', 'kd_attn')  # --quick measures the peak memory of these only (each run imports torch)
BS, N_CLASSES, W_STUDENT = 64, 10, 16
W_TEACHER = dict(resnet=50, flat=52)  # the teacher's width, about 10x the student's MACs in each layout
LAYOUT = 'resnet'                      # set by --layout
LAYERS = ['b1', 'b2', 'b3']  # matched pairwise: student and teacher have the same names and spatial sizes
CACHE_MB = 256
# glibc settings for the timings: keep freed memory in the process instead of handing it back to the system
MALLOC = dict(MALLOC_TRIM_THRESHOLD_=str(2**30), MALLOC_MMAP_THRESHOLD_=str(2**30), MALLOC_TOP_PAD_=str(2**28))

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='smoke run (~20 s): fewer batches and rounds')
    p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads (default 1: see the module docstring)')
    p.add_argument('--rounds', type=int, help='timing rounds (each runs every configuration once)')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
    p.add_argument('--default-malloc', action='store_true',
                   help="time with glibc's default settings, which return freed memory to the system (see the docstring)")
    p.add_argument('--layout', choices=['resnet', 'flat'], default='resnet',
                   help='models: resnet (default; stem + 3 stages of 2 conv blocks) or flat (1 conv block per stage, no '
                        'stem: 4x larger feature maps for the same MACs, the worst case for a feature loss)')
    return p.parse_args(argv)

def block(ci, co, stride):
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))

def stage(ci, co, stride):
    "Two 3x3 conv blocks, the first one changing the width and the resolution"
    return nn.Sequential(block(ci, co, stride), block(co, co, 1))

def cnn(w, layout=None):
    """3x32x32 -> 10 classes, a plain ResNet-like layout: a stem that halves the resolution, then three stages of two
    conv blocks; the stages' outputs are the feature maps `b1` (w, 16x16), `b2` (2w, 8x8), `b3` (4w, 4x4)"""
    head = OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(4*w, N_CLASSES))
    if (layout or LAYOUT) == 'flat':  # --layout flat: one conv block per stage, no stem: maps `b1` (w, 32x32), ...
        return nn.Sequential(OrderedDict(b1=block(3, w, 1), b2=block(w, 2*w, 2), b3=block(2*w, 4*w, 2), **head))
    return nn.Sequential(OrderedDict(stem=block(3, w, 2), b1=stage(w, w, 1), b2=stage(w, 2*w, 2), b3=stage(2*w, 4*w, 2), **head))

def macs(model, xb):
    "Multiply-accumulates per item of one forward, counted by hooks on the Conv2d and Linear layers"
    total = 0
    def hook(m, i, o):
        nonlocal total
        if isinstance(m, nn.Conv2d): total += o[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else: total += o[0].numel() * m.in_features
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    with torch.no_grad(): model(xb[:1])
    model.train(was)
    for h in hs: h.remove()
    return total

def feature_sizes(model):
    "Number of values per item in each of the maps `LAYERS`"
    got = []
    hs = [getattr(model, n).register_forward_hook(lambda m, i, o: got.append(o[0].numel())) for n in LAYERS]
    with torch.no_grad(): model.eval()(torch.zeros(1, 3, 32, 32))
    for h in hs: h.remove()
    model.train()
    return got

def batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BS, 3, 32, 32, generator=g), torch.randint(0, N_CLASSES, (BS,), generator=g)) for _ in range(n)]

def make_dls(train, valid):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    # bs=None: the items are whole batches already, the loader only hands them over
    return DataLoaders(DataLoader(train, bs=None, shuffle=True), DataLoader(valid, bs=None))

def _silent(*args, **kwargs): pass

@contextmanager
def quiet(learn):
    "No progress bar, no printing; the callback still sees a logger, so its loss columns run as by default"
    old = learn.logger
    learn.logger = _silent
    try:
        with learn.no_bar(): yield learn
    finally: learn.logger = old

# ---------------------------------------------------------------------------------------------------------- configs

_combined_saw_maps = False
def combined(**kw):
    global _combined_saw_maps
    from fasterai.distill.losses import SoftTarget, Attention
    if kw.get('fm_s'): _combined_saw_maps = True  # else the Attention term compares nothing
    return SoftTarget(**kw) + Attention(**kw)

KD_CONFIGS = OrderedDict([
    ('kd_soft',        'KD logits (SoftTarget)'),
    ('kd_soft_cl',     'KD logits, channels_last=True (teacher in channels-last layout)'),
    ('kd_attn',        'KD 3 feature pairs (Attention)'),
    ('kd_combined',    'KD combined(**kw) = SoftTarget + Attention, 3 pairs'),
    ('kd_list',        'KD loss=[SoftTarget, Attention], 3 pairs'),
    ('kd_cached_fill', f'KD SoftTarget, cache_mb={CACHE_MB}: 1st epoch (fills)'),
    ('kd_cached',      f'KD SoftTarget, cache_mb={CACHE_MB}: later epochs (hits)'),
])
CACHED = ('kd_cached_fill', 'kd_cached')

def make_cb(name, teacher):
    "The callback of configuration `name`, or `None` for the student alone"
    from fasterai.distill.distillation_callback import KnowledgeDistillationCallback as KD
    from fasterai.distill.losses import SoftTarget, Attention
    if name == 'student':     return None
    if name == 'kd_soft':     return KD(teacher, SoftTarget, weight=0.5)
    if name == 'kd_soft_cl':  return KD(teacher, SoftTarget, weight=0.5, channels_last=True)
    if name == 'kd_attn':     return KD(teacher, Attention, LAYERS, LAYERS, weight=0.5)
    if name == 'kd_combined': return KD(teacher, combined, LAYERS, LAYERS, weight=0.5)
    if name == 'kd_list':     return KD(teacher, [SoftTarget, Attention], LAYERS, LAYERS, weight=0.5)
    if name in CACHED:        return KD(teacher, SoftTarget, weight=0.5, cache_mb=CACHE_MB)
    raise ValueError(name)

def make_learner(name, student_state, teacher, dls):
    from fastai.learner import Learner
    student = cnn(W_STUDENT)
    student.load_state_dict(student_state)
    cb = make_cb(name, teacher)
    return Learner(dls, student, loss_func=nn.CrossEntropyLoss(), cbs=[cb] if cb is not None else None)

def setup(n_train, n_valid):
    torch.manual_seed(0)
    teacher, student = cnn(W_TEACHER[LAYOUT]), cnn(W_STUDENT)
    return teacher, student, batches(n_train, 1), batches(n_valid, 2)

def teacher_pass(teacher, train):
    "The teacher alone: eval mode, no autograd, over the training batches"
    was = teacher.training
    teacher.eval()
    with torch.no_grad():
        for xb, _ in train: teacher(xb)
    teacher.train(was)

# ---------------------------------------------------------------------------------------------------------- memory

def _status_kib(field):
    for l in open('/proc/self/status'):
        if l.startswith(field + ':'): return int(l.split()[1])

def _reset_peak() -> bool:
    "Reset this process's peak RSS (Linux >= 4.0), so that the peak covers the run and not the imports"
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return True
    except OSError: return False

def memory_run(name, threads, n_train, epochs):
    "One configuration in this (fresh) process; prints its peak RSS as JSON"
    torch.set_num_threads(threads)
    teacher, student, train, valid = setup(n_train, max(1, n_train // 3))
    teacher.eval()
    with torch.no_grad(): teacher(train[0][0])  # the teacher is held and has run once, whatever the configuration
    learn = make_learner(name, student.state_dict(), teacher, make_dls(train, valid))
    gc.collect()
    before = _status_kib('VmRSS')
    reset = _reset_peak()
    with quiet(learn): learn.fit(epochs, 1e-3)
    # after the reset, VmHWM (which is also what ru_maxrss reads) is the peak since the reset
    peak = _status_kib('VmHWM') if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(config=name, peak_kib=peak, before_kib=before, reset=reset)))

def measure_memory(names, threads, n_train, epochs, parallel, repeats):
    "Peak RSS of each configuration, the run with the median peak of `repeats` fresh processes; `parallel` at a time"
    def one(name):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), '--config', name, '--threads', str(threads), '--layout', LAYOUT,
                            '--mem-n-train', str(n_train), '--mem-epochs', str(epochs)], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k not in MALLOC})  # memory as users get it
        line = next((l for l in r.stdout.splitlines()[::-1] if l.startswith('{')), None)
        if r.returncode or line is None:
            raise RuntimeError(f"memory run {name!r} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        return json.loads(line)
    with ThreadPoolExecutor(max(1, parallel)) as ex: got = list(ex.map(one, [n for n in names for _ in range(repeats)]))
    return {n: sorted(got[i*repeats:(i+1)*repeats], key=lambda m: m['peak_kib'])[repeats//2] for i, n in enumerate(names)}

# ---------------------------------------------------------------------------------------------------------- timing

def timed(f):
    "Wall time and CPU time (of this process, all threads) of `f()`"
    gc.collect()
    w, c = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - w, time.process_time() - c

def cpu_model():
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()

def fmt(x, target=None):
    if x is None: return '—'
    return f'{x:.3f}' if target is None or x <= target else f'**{x:.3f}**'

def main(args):
    import fastai
    global LAYOUT
    LAYOUT = args.layout
    cfg = dict(QUICK if args.quick else FULL)
    if args.rounds: cfg['rounds'] = args.rounds
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    names = ['student', *KD_CONFIGS]

    teacher, student, train, valid = setup(cfg['n_train'], cfg['n_valid'])
    state = student.state_dict()
    dls, warm_dls = make_dls(train, valid), make_dls(train[:2], valid[:1])
    m_s, m_t = macs(student, train[0][0]), macs(teacher, train[0][0])
    n_s, n_t = (sum(p.numel() for p in m.parameters()) for m in (student, teacher))
    learners = {n: make_learner(n, state, teacher, dls) for n in names}

    print('# KnowledgeDistillationCallback benchmark' + (' (--quick: smoke run, numbers not meaningful)' if args.quick else ''))
    print()
    print(f'- machine: {cpu_model()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable); '
          f'torch.set_num_threads({args.threads}) -> torch.get_num_threads() = {torch.get_num_threads()}')
    print(f'- torch {torch.__version__}, fastai {fastai.__version__}, Python {platform.python_version()}')
    print('- glibc malloc: ' + ('default (--default-malloc)' if args.default_malloc else
          'freed memory kept in the process for the timings (' + ', '.join(f'{k}={v}' for k, v in MALLOC.items())
          + '); the peak-memory runs use the default'))
    print(f'- student {m_s/1e6:.2f} MMACs/item, {n_s/1e3:.0f}k params; teacher {m_t/1e6:.2f} MMACs/item, '
          f'{n_t/1e3:.0f}k params; teacher/student MACs = {m_t/m_s:.1f}x; layout {LAYOUT} '
          f'(feature maps per item: student {sum(feature_sizes(student))/1e3:.1f}k values, teacher {sum(feature_sizes(teacher))/1e3:.1f}k)')
    print(f'- data: synthetic 3x32x32, {N_CLASSES} classes, bs={BS}, {cfg["n_train"]} train + {cfg["n_valid"]} valid '
          f'batches per epoch; Adam; one learn.fit(1) per measurement; no progress bar, silent logger')
    print(f'- timing: {cfg["rounds"]} rounds; in each, every KD configuration runs once next to its own student epoch '
          f'and teacher pass (orders rotated), and its ratio to the ideal is taken within that trio; validation: '
          f'{cfg["val_rounds"]} rounds of one learn.validate() per configuration, each paired with one of the student alone')
    print(f'- feature pairs: {LAYERS} of both models; cache: cache_mb={CACHE_MB}')
    print(flush=True)

    # warm-up: every configuration on two batches (same shapes: the kernels and the allocator are warm);
    # the cached configuration for a full epoch, so that its cache holds every training batch
    # a configuration that fails is reported with its error and left out of the rest
    broken = {}
    for n, learn in list(learners.items()):
        learn.dls = dls if n == 'kd_cached' else warm_dls
        try:
            with quiet(learn): learn.fit(1, 1e-3); learn.validate()
        except Exception as e:
            broken[n] = f'{type(e).__name__}: ' + ' '.join(str(e).split())
            print(f'{n} FAILED, left out: {broken[n]}', flush=True)
            del learners[n]
        learn.dls = dls
    names = [n for n in names if n not in broken]
    if 'kd_cached' in broken: names = [n for n in names if n != 'kd_cached_fill']
    teacher_pass(teacher, train[:2])
    # what exists now lives to the end: out of the collector's sight, the collection before each measurement is quick
    gc.collect(); gc.freeze()

    # epochs: in each round, every KD configuration runs next to its own student epoch and teacher pass, in a
    # rotated order, and its ratio to the ideal is taken within that trio: load that comes and goes on a shared
    # machine then mostly slows both sides of a ratio
    def run(n):
        if n == 'teacher': return timed(lambda: teacher_pass(teacher, train))
        learn = learners[n]
        if n == 'kd_cached_fill':  # the 1st epoch of a cache: emptied before every measurement
            next(c for c in learn.cbs if getattr(c, 'cache', None) is not None).cache.clear()
        with quiet(learn): return timed(lambda: learn.fit(1, 1e-3))
    kd_run = [n for n in names if n != 'student']
    runs = {n: [] for n in ['student', 'teacher', *kd_run]}
    ideal, alone = {n: [] for n in kd_run}, {n: [] for n in kd_run}  # per KD configuration: its trios' ideal, student
    for r in range(cfg['rounds']):
        for i, n in enumerate(kd_run[r % len(kd_run):] + kd_run[:r % len(kd_run)]):
            trio = ['student', 'teacher', n]
            k = (r + i) % 3
            got = {m: run(m) for m in trio[k:] + trio[:k]}
            for m, t in got.items(): runs[m].append(t)
            ideal[n].append(tuple(a + b for a, b in zip(got['student'], got['teacher'])))
            alone[n].append(got['student'])
        print(f'round {r+1}/{cfg["rounds"]} (wall s): ' + ', '.join(f'{n} {runs[n][-1][0]:.2f}' for n in runs), flush=True)

    # validation passes with the callbacks attached (valid_distill=False, the default): short, so each one is
    # paired with a validation of the student alone right next to it, and repeated more
    val_names = [n for n in names if n not in ('kd_cached_fill', 'student')]
    vals = {n: [] for n in val_names}
    for r in range(cfg['val_rounds']):
        for n in val_names[r % len(val_names):] + val_names[:r % len(val_names)]:
            pair = [n, 'student'] if r % 2 else ['student', n]
            got = {}
            for m in pair:
                with quiet(learners[m]): got[m] = timed(learners[m].validate)
            vals[n].append((got[n], got['student']))

    mem = None
    if not args.no_memory:
        mem_names = [n for n in names if n != 'kd_cached_fill' and (not args.quick or n in QUICK_MEMORY)]
        print(f'peak memory: {len(mem_names)} subprocesses ...', flush=True)
        mem = measure_memory(mem_names, args.threads, cfg['mem_train'], cfg['mem_epochs'],
                             len(os.sched_getaffinity(0)), cfg['mem_repeats'])
        if 'kd_cached' in mem: mem['kd_cached_fill'] = mem['kd_cached']

    # ------------------------------------------------------------------------------------------------------ report
    fails = []
    med = statistics.median
    all_ideal = [t for v in ideal.values() for t in v]
    def ratio(n, k=0):
        if n in ideal: return med([a[k] / b[k] for a, b in zip(runs[n], ideal[n])])
        return med([a[k] for a in runs[n]]) / med([b[k] for b in all_ideal])  # student, teacher: share of the ideal
    def vratio(n, k=0): return med([a[k] / b[k] for a, b in vals[n]]) if n in vals else None
    def secs(n): return med([w for w, _ in runs[n]])
    def mratio(n): return mem[n]['peak_kib'] / mem['student']['peak_kib'] if mem and n in mem else None
    def mb(n):
        if not mem or n not in mem: return '—'
        return f"{mem[n]['peak_kib']/1024:.0f} (+{(mem[n]['peak_kib'] - mem[n]['before_kib'])/1024:.0f})"
    print()
    print('| configuration | epoch s (median, wall) | × ideal, wall (≤ 1.05) | × ideal, CPU time '
          '| validation × student, wall (≤ 1.02) | validation, CPU time | peak RSS × student (≤ 1.05) | peak RSS MB (+ over pre-fit) |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    print(f'| student alone | {secs("student"):.3f} | {fmt(ratio("student"))} | {fmt(ratio("student", 1))} '
          f'| 1.000 | 1.000 | {fmt(mratio("student"))} | {mb("student")} |')
    print(f'| teacher inference alone (eval, no_grad) | {secs("teacher"):.3f} | {fmt(ratio("teacher"))} '
          f'| {fmt(ratio("teacher", 1))} | — | — | — | — |')
    print(f'| **ideal** = student + teacher inference | {med([w for w, _ in all_ideal]):.3f} | 1.000 | 1.000 | — | — | — | — |')
    for n, label in KD_CONFIGS.items():
        if n in broken or (n == 'kd_cached_fill' and 'kd_cached' in broken):
            print(f'| {label} | error | | | | | | |')
            fails.append(f'{label}: {broken.get(n) or broken["kd_cached"]}')
            continue
        r, v, p = ratio(n), vratio(n), mratio(n)
        if n == 'kd_cached':  # the target of a full cache is the student alone: the ratio to the student of its trio
            rs = [med([a[k] / s[k] for a, s in zip(runs[n], alone[n])]) for k in (0, 1)]
            wall, cpu = f'{r:.3f} = {fmt(rs[0], 1.10)} × student (≤ 1.10)', f'{ratio(n, 1):.3f} = {fmt(rs[1], 1.10)} × student'
            fails += [f'{label}: epoch {rs[0]:.3f} x student > 1.10'] if rs[0] > 1.10 else []
        else:
            wall, cpu = fmt(r, 1.05), fmt(ratio(n, 1), 1.05)
            fails += [f'{label}: epoch {r:.3f} > 1.05'] if r > 1.05 else []
        print(f'| {label} | {secs(n):.3f} | {wall} | {cpu} | {fmt(v, 1.02)} '
              f'| {fmt(vratio(n, 1), 1.02)} | {fmt(p, 1.05)} | {mb(n)} |')
        fails += [f'{label}: {what} {x:.3f} > {lim}' for what, x, lim in
                  (('validation', v, 1.02), ('peak memory', p, 1.05)) if x is not None and x > lim]
    print()
    print('Epoch = learn.fit(1), train + valid. Ratios are medians of per-round ratios; bold: above the target '
          '(the targets apply to the wall-time columns). CPU time = time.process_time() of this process: on a '
          'shared machine it is less disturbed by other load than wall time (with one thread they measure the same work).')
    if mem:
        how = ('VmHWM reset just before fit (/proc/self/clear_refs)' if all(m['reset'] for m in mem.values())
               else 'ru_maxrss')
        print(f'Peak RSS: {how}, a fresh process per configuration ({cfg["mem_epochs"]} epochs of {cfg["mem_train"]} batches), '
              f'each holding the teacher and having run it once; "+": peak minus RSS just before fit.')
    print('Cache rows: "1st epoch" starts from an emptied cache each time; "later epochs" reads a full cache. '
          'Both rows share one memory run (2 epochs).')
    for n, msg in broken.items(): print(f'Error in {KD_CONFIGS.get(n, n)}: {msg[:400]}')
    if 'kd_combined' in runs and not _combined_saw_maps:
        print('WARNING: combined(**kw) never received feature maps (fm_s empty): the Attention term was 0 and the '
              'combined row measures SoftTarget alone.')
        fails.append('combined loss got no feature maps')
    print('Targets: ' + ('all met.' if not fails else 'NOT met: ' + '; '.join(fails)))
    print(f'Benchmark wall time: {time.perf_counter() - t_start:.0f} s')

if __name__ == '__main__':
    argv = sys.argv[1:]
    if '--config' in argv:  # internal: one peak-memory run in this fresh process
        p = argparse.ArgumentParser()
        p.add_argument('--config'); p.add_argument('--threads', type=int)
        p.add_argument('--mem-n-train', type=int); p.add_argument('--mem-epochs', type=int); p.add_argument('--layout')
        a = p.parse_args(argv)
        LAYOUT = a.layout
        memory_run(a.config, a.threads, a.mem_n_train, a.mem_epochs)
    else:
        args = parse_args(argv)
        if not args.default_malloc and any(os.environ.get(k) != v for k, v in MALLOC.items()):
            # the settings must be there when the process starts: start again with them
            os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], {**os.environ, **MALLOC})
        main(args)
