"""The callback's own host time per batch: KD on logits against a bare callback that only runs the teacher.

On a GPU a small student's step takes a few milliseconds, so the Python the callback runs per batch caps throughput.
Tiny models make the arithmetic negligible: what is left is host time. One learner trains alternate epochs with a bare
callback (the teacher's pass in `before_batch`, output dropped) and with `KnowledgeDistillationCallback(SoftTarget)`;
the difference of their median CPU time per batch is the callback's own cost. `--profile` adds where it goes.

    python bench/host.py [--rounds 15] [--batches 150] [--profile]
"""
import argparse, cProfile, io, pstats, statistics, sys, time
from pathlib import Path
import torch, torch.nn as nn
from torch.utils.data import TensorDataset
from fastai.basics import *
sys.path.insert(0, str(Path(__file__).parent))
from timing import cpu_model
from fasterai.distill.all import KnowledgeDistillationCallback, SoftTarget

class Bare(Callback):
    "The least a distillation callback costs: one teacher pass per training batch, its output dropped"
    order = KnowledgeDistillationCallback.order
    def __init__(self, teacher): self.teacher = teacher.eval()
    def before_batch(self):
        if self.training:
            with torch.no_grad(): self.teacher(*self.xb)

class Times(Callback):
    "CPU time of each training batch, from one `before_batch` to the next"
    order = -100
    def before_train(self): self.marks = []
    def before_batch(self):
        if self.training: self.marks.append(time.process_time())
    def after_train(self): self.marks.append(time.process_time())
    def per_batch(self): return statistics.median(b - a for a,b in zip(self.marks, self.marks[1:]))

def setup(n_batches, bs=64, d=32, c=10):
    x,y = torch.randn(n_batches*bs, d),torch.randint(0, c, (n_batches*bs,))
    dls = DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(x[:bs], y[:bs]), bs=bs, device="cpu")
    teacher,times = nn.Linear(d, c),Times()
    learn = Learner(dls, nn.Linear(d, c), loss_func=CrossEntropyLossFlat(), cbs=times)
    return learn,teacher,times

def epoch(learn, cb):
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=cb)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--rounds', type=int, default=15); p.add_argument('--batches', type=int, default=150)
    p.add_argument('--profile', action='store_true')
    a = p.parse_args()
    torch.set_num_threads(1)
    learn,teacher,times = setup(a.batches)
    kd = lambda: KnowledgeDistillationCallback(teacher, SoftTarget)
    for make in (lambda: Bare(teacher), kd): epoch(learn, make())  # warm-up
    bare,kdt = [],[]
    for r in range(a.rounds):
        for name,make,out in (('bare', lambda: Bare(teacher), bare), ('kd', kd, kdt))[::1 if r % 2 else -1]:
            epoch(learn, make()); out.append(times.per_batch()*1e3)
    mb,mk = statistics.median(bare),statistics.median(kdt)
    diffs = sorted(k - b for b,k in zip(bare, kdt))  # each round's pair ran back to back: the load of the machine cancels out
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, 1 thread; {a.rounds} rounds of {a.batches} batches (batch 64, Linear 32->10)")
    print(f"bare callback: {mb:.3f} ms per batch (rounds: {', '.join(f'{v:.3f}' for v in bare)})")
    print(f"KD, SoftTarget: {mk:.3f} ms per batch (rounds: {', '.join(f'{v:.3f}' for v in kdt)})")
    q = lambda f: diffs[min(len(diffs) - 1, int(f*len(diffs)))]
    print(f"the callback's own host time: {statistics.median(diffs):.3f} ms per batch (median of the rounds' differences; quartiles {q(0.25):.3f} to {q(0.75):.3f})")
    if a.profile:
        pr = cProfile.Profile(); pr.enable(); epoch(learn, kd()); pr.disable()
        s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('tottime').print_stats(25); print(s.getvalue())
