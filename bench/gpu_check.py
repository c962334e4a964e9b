#!/usr/bin/env python
"""What only a GPU can check, ready to run: `python bench/gpu_check.py` (a few minutes on one GPU).

On CUDA: distillation under fp16 autocast with a GradScaler (`to_fp16()`) and under bf16 (`to_bf16()`), a feature loss
through adapters, a teacher on another GPU than the student (with two GPUs), a channels-last teacher, a fit from a
`TeacherStore`, the peak CUDA memory of KD against the student alone, KD's time per batch against the ideal (timed
between `torch.cuda.synchronize()` calls), and fastai's `distrib_ctx` for real in one process (with Accelerate).
Without CUDA, or with `--quick`, the same checks run on small models on the CPU in under a minute (CI runs this mode;
its timings mean nothing). It prints one table and exits with 1 if a check failed. It imports what a user imports."""
from __future__ import annotations
import argparse, contextlib, io, json, math, os, platform, socket, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import torch, torch.nn as nn
from fastai.basics import *
from fastai.callback.fp16 import MixedPrecision
from torch.utils.data import TensorDataset
from fasterai.distill.distillation_callback import KnowledgeDistillationCallback as KD, DistillLoss, TeacherStore
from fasterai.distill.losses import SoftTarget, Attention, FitNet
sys.path.insert(0, str(Path(__file__).parent))
from workload import cnn  # the benchmarks' conv nets: maps b1, b2, b3 at the same sizes in student and teacher

class Setup:
    "The device, the sizes for it, the data and the models"
    def __init__(self, quick:bool):
        self.cuda = torch.cuda.is_available() and not quick
        self.device = torch.device('cuda' if self.cuda else 'cpu')
        self.n, self.size, self.bs, self.ws, self.wt = (4096, 32, 256, 16, 64) if self.cuda else (128, 8, 32, 4, 8)
        self.layout = 'resnet' if self.cuda else 'flat'  # flat: one conv per stage, the least work on the CPU
        if not self.cuda: torch.set_num_threads(1)     # tiny convolutions: one thread is the fastest
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(self.n, 3, self.size, self.size, generator=g)
        self.y = (self.x.mean((1, 2, 3))*40).long().clamp(-5, 4) + 5

    def dls(self):
        n = self.n * 3 // 4
        return DataLoaders.from_dsets(TensorDataset(self.x[:n], self.y[:n]), TensorDataset(self.x[n:], self.y[n:]),
                                      bs=self.bs, shuffle=False, device=self.device)
    def student(self, seed=1): torch.manual_seed(seed); return cnn(self.ws, self.layout)
    def teacher(self, seed=2): torch.manual_seed(seed); return cnn(self.wt, self.layout).to(self.device).eval()

    def fit(self, teacher, loss=SoftTarget, cbs=(), epochs=1, student=None, **kw) -> Learner:
        "A fresh student distilled from `teacher` (no distillation with `loss=None`) for `epochs` epochs, seeded alike every time"
        kd = [] if loss is None else [KD(teacher, loss, **kw)]
        learn = Learner(self.dls(), student or self.student(), loss_func=CrossEntropyLossFlat(), cbs=[*kd, *cbs])
        set_seed(3)
        with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 1e-2)
        return learn

def finite(learn) -> bool: return all(math.isfinite(float(l)) for l in learn.recorder.losses)
def losses(learn) -> list: return [float(l) for l in learn.recorder.losses]
def state(m) -> dict: return {k: v.detach().clone() for k,v in m.state_dict().items()}
def same(a:dict, b:dict) -> bool: return all(torch.equal(a[k], b[k]) for k in a)
def feat(): return DistillLoss(Attention, weight=10., activations_student=['b2', 'b3'], activations_teacher=['b2', 'b3'])

class OutDtype:
    "Records the dtype of the teacher's prediction in each pass"
    def __init__(self, m): self.seen, self.h = set(), m.register_forward_hook(lambda mod, i, o: self.seen.add(str(o.dtype).replace('torch.', '')))

def precision(s:Setup, mode:str):
    "KD (SoftTarget + Attention) under fastai's mixed precision: the teacher runs under the student's autocast"
    if mode == 'bf16' and s.cuda and not torch.cuda.is_bf16_supported(): return 'skipped', 'this GPU has no bfloat16'
    t = s.teacher(); before = state(t); rec = OutDtype(t)
    learn = s.fit(t, [SoftTarget, feat()], cbs=[MixedPrecision(mode)])
    rec.h.remove()
    want = {'fp16': 'float16', 'bf16': 'bfloat16'}[mode] if s.cuda else 'float32'  # fastai's autocast is CUDA's only
    ok = finite(learn) and rec.seen == {want} and same(state(t), before)
    where = '' if s.cuda else " (fastai's autocast is CUDA's: float32 on the CPU)"
    return ok, f"loss {losses(learn)[0]:.3f} -> {losses(learn)[-1]:.3f}; teacher out {'/'.join(sorted(rec.seen))}{where}, weights unchanged"

def adapters(s:Setup):
    "FitNet between maps of different widths through learned 1x1 adapters (under fp16 on CUDA)"
    t = s.teacher()
    kd = KD(t, FitNet, ['b1', 'b3'], ['b1', 'b3'], adapters=True)
    learn = Learner(s.dls(), s.student(), loss_func=CrossEntropyLossFlat(), cbs=[kd] + [MixedPrecision()]*s.cuda)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    first = state(kd.connectors)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    moved = not same(state(kd.connectors), first)
    outside = not {id(p) for p in kd.connectors.parameters()} & {id(p) for p in learn.model.parameters()}
    return finite(learn) and len(kd.connectors) == 2 and moved and outside, f"{len(kd.connectors)} adapters, trained, outside the student"

def two_devices(s:Setup):
    "The teacher on the second GPU, the student on the first: it runs on the student's, and goes back after the fit"
    if not s.cuda or torch.cuda.device_count() < 2:
        return 'skipped', f"needs 2 GPUs, found {torch.cuda.device_count() if s.cuda else 0}"
    t = s.teacher().to('cuda:1')
    learn = s.fit(t, [SoftTarget, feat()])
    back = next(t.parameters()).device == torch.device('cuda:1')
    return finite(learn) and back, f"trained; teacher back on {next(t.parameters()).device}"

def channels_last(s:Setup):
    "A teacher converted to channels-last weights gives the losses of the same teacher as given, and keeps its layout"
    ref = losses(s.fit(s.teacher(), [SoftTarget, feat()]))
    t = s.teacher().to(memory_format=torch.channels_last)
    got = losses(s.fit(t, [SoftTarget, feat()]))
    diff = max(abs(a - b) / max(1., abs(b)) for a,b in zip(got, ref))
    kept = t[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    ok = diff < (1e-2 if s.cuda else 1e-4) and kept  # cuDNN may use TF32 and other kernels for either layout
    return ok, f"losses within {diff:.1e} of the contiguous teacher's; layout kept"

def store(s:Setup, tmp:Path):
    "A store filled once, then a fit from it without the teacher (read as on a network file system): the online losses"
    torch.backends.cudnn.deterministic = True  # the same teacher outputs in both fits
    try:
        t = s.teacher()
        online = losses(s.fit(t, [SoftTarget, feat()]))
        with contextlib.redirect_stdout(io.StringIO()):  # the fill's progress bar
            filled = TeacherStore(tmp/'teacher.db').fill(t, s.dls().train, layers=['b2', 'b3'])
        ro = TeacherStore(tmp/'teacher.db', readonly='immutable')
        offline = losses(s.fit(None, [SoftTarget, feat()], store=ro))
    finally: torch.backends.cudnn.deterministic = False
    diff = max(abs(a - b) for a,b in zip(offline, online))
    names = sorted(p.name for p in tmp.glob('teacher.db*'))
    return diff < 1e-4 and ro.epoch_hit_rate == 1 and names == ['teacher.db'], \
        f"{filled.misses} items stored; losses within {diff:.1e} of online; hit rate {ro.epoch_hit_rate:.0%}"

def sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()

def peak(fn) -> int:
    "Peak CUDA memory allocated while `fn` runs, in bytes"
    sync(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    fn(); sync()
    return torch.cuda.max_memory_allocated() - base

def memory(s:Setup):
    "Peak CUDA memory of a KD fit against the student's alone (both hold the teacher's weights)"
    if not s.cuda: return 'skipped', 'CUDA only'
    t = s.teacher()
    alone,kd = peak(lambda: s.fit(t, None)),peak(lambda: s.fit(t, [SoftTarget, feat()]))
    mb = lambda b: f"{b/2**20:.0f} MB"
    w = sum(p.numel()*p.element_size() for p in t.parameters())
    return 'measured', f"student alone {mb(alone)}, KD {mb(kd)} ({kd/alone:.2f}x); teacher weights {mb(w)}"

class BatchTimes(Callback):
    "The time from one training batch to the next (loader, callbacks, forward, backward, step), between GPU synchronisations"
    order = -100
    def __init__(self): self.times, self.last = [], None
    def before_train(self): self.last = None
    def before_batch(self):
        if not self.training: return
        sync(); now = time.perf_counter()
        if self.last is not None: self.times.append(now - self.last)
        self.last = now

def median(xs): return sorted(xs)[len(xs)//2]

def speed(s:Setup):
    "KD's time per training batch against the ideal: the student's batch alone plus one teacher pass on it"
    t, times = s.teacher(), {}
    for name,loss in (('student', None), ('kd', [SoftTarget, feat()])):
        bt = BatchTimes(); s.fit(t, loss, cbs=[bt], epochs=3)
        times[name] = median(bt.times[len(bt.times)//3:])  # after the first epoch: kernels chosen, memory allocated
    xbs, tt = [xb for xb,_ in s.dls().train], []
    with torch.no_grad():
        for xb in xbs * 3:
            sync(); t0 = time.perf_counter(); t(xb); sync(); tt.append(time.perf_counter() - t0)
    ideal = times['student'] + median(tt[len(xbs):])
    note = '' if s.cuda else ' (quick mode: not meaningful)'
    return 'measured', f"{1e3*times['kd']:.2f} ms per batch, {times['kd']/ideal:.2f}x the ideal {1e3*ideal:.2f} ms{note}"

CHILD = """
import json, sys, torch
from fastai.basics import *
from fastai.distributed import *
sys.path.insert(0, {bench!r})
from gpu_check import Setup, feat
from fasterai.distill.distillation_callback import KnowledgeDistillationCallback as KD, DistillLoss
from fasterai.distill.losses import SoftTarget, FitNet
s, seen = Setup(False), []
class Seen(Callback):
    def before_train(self): seen.append((type(self.learn.model).__name__, torch.distributed.is_initialized()))
kd = KD(s.teacher(), [SoftTarget, DistillLoss(FitNet, activations_student=['b3'], activations_teacher=['b3'], adapters=True)])
learn = Learner(s.dls(), s.student(), loss_func=CrossEntropyLossFlat(), cbs=[kd, Seen()])
with learn.no_bar(), learn.distrib_ctx(): learn.fit(1, 1e-2)
print(json.dumps(dict(seen=seen, losses=[float(l) for l in learn.recorder.losses], adapters=len(kd.connectors))))
"""

def distrib(s:Setup):
    "fastai's distrib_ctx for real, in one process launched as torchrun would (RANK, WORLD_SIZE, ... set)"
    if not s.cuda: return 'skipped', "needs CUDA: fastai's DistributedTrainer fails on the CPU ('Sequential' object has no attribute 'device')"
    try: import accelerate  # noqa: F401
    except ImportError: return 'skipped', 'Accelerate is not installed (pip install accelerate)'
    with socket.socket() as sk: sk.bind(('127.0.0.1', 0)); port = sk.getsockname()[1]
    env = {**os.environ, 'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '1', 'LOCAL_WORLD_SIZE': '1',
           'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)}
    r = subprocess.run([sys.executable, '-c', CHILD.format(bench=str(Path(__file__).parent))], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode: return False, r.stderr.strip().splitlines()[-1][:200]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    ok = all(math.isfinite(l) for l in res['losses']) and res['adapters'] == 1
    return ok, f"model in the fit: {res['seen'][0][0]}, process group initialized: {res['seen'][0][1]}"

def device_name(s:Setup) -> str:
    if s.cuda: return f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    model = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), None) \
        if os.path.exists('/proc/cpuinfo') else None
    return f"CPU {model or platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__}), quick mode"

def main(quick:bool):
    s = Setup(quick)
    if not s.cuda: warnings.filterwarnings('ignore', message='.*CUDA is not available')  # fastai's autocast and GradScaler
    t0, tmp = time.time(), Path(tempfile.mkdtemp())
    checks = [('KD, fp16 + GradScaler', lambda: precision(s, 'fp16')), ('KD, bf16', lambda: precision(s, 'bf16')),
              ('adapters (FitNet)', lambda: adapters(s)), ('teacher on another GPU', lambda: two_devices(s)),
              ('channels-last teacher', lambda: channels_last(s)), ('fit from a store', lambda: store(s, tmp)),
              ('peak memory', lambda: memory(s)), ('time per batch', lambda: speed(s)), ('distrib_ctx, 1 process', lambda: distrib(s))]
    print(f"device: {device_name(s)}")
    failed = 0
    for name,fn in checks:
        try: ok, detail = fn()
        except Exception as e: ok, detail = False, f"{type(e).__name__}: {e}"[:200]
        status = {True: 'ok', False: 'FAILED'}.get(ok, ok)  # or 'skipped', 'measured'
        failed += status == 'FAILED'
        print(f"| {name:<24} | {status:<8} | {detail}", flush=True)
    print(f"{len(checks) - failed}/{len(checks)} without failure, {time.time() - t0:.0f} s")
    return 1 if failed else 0

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='small models on the CPU, even where there is a GPU (what CI runs)')
    sys.exit(main(p.parse_args().quick))
