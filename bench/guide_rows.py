#!/usr/bin/env python
"""Rows of the losses guide's table "The other methods, measured outside this page", for the losses added in tier 2 and after.

    PYTHONPATH=. .venv/bin/python bench/guide_rows.py                        # every loss below (about 15 minutes)
    PYTHONPATH=. .venv/bin/python bench/guide_rows.py --losses PADL2,FT      # some of them
    PYTHONPATH=. .venv/bin/python bench/guide_rows.py --quick                # smoke run: one seed, one epoch each

The setting of `nbs/tutorials/distill/losses_guide.ipynb`, outside the page because CI cannot afford it: the same
digits data (100 labels, the rest unlabelled), teacher, student and augmentation (from `fasterai.distill.examples`)
and `fit_student`. A loss of the features only runs at weight 0.5, with the power-of-ten scale the guide computes on an
untrained student; a loss that reads the logits (`DISTPlus`, `ProjectorKD`, `CTKD`) runs as the guide's output losses
do: at weight 0.9, unscaled, with its default parameters. `FT` and `KTA` train their auto-encoder first (10 passes over
the student's batches, left out of the epoch times), and `SSKD` its teacher head (as many passes); `SSKD` runs the
paper's recipe (`sskd_kd`: `RotatedViews`, SoftTarget at T=4 on the four views, SSKD at 10, the task at 0.1). Seeds 0-2, and the baseline at the same seeds.
Prints accuracy per seed, the mean and std, the gain paired with the baseline, and the median seconds per epoch as a
multiple of the baseline's, with the CPU. `NST` is there to check the setting against its row (91.98 +- 2.08 on the
guide's Intel Xeon), and `SoftTarget` (T=4) and `DIST` to compare the losses on the logits with on another CPU.
About 1.5 minutes per loss on one idle core (KDSVD about 4).
"""
import argparse, math, time
import numpy as np, pandas as pd
import torch, torch.nn as nn, torch.nn.functional as F
from fastai.basics import *
from fasterai.distill.all import *
from fasterai.distill.examples import digits, pick_labels, digits_cnn, RandomAffine
from timing import cpu_model
torch.set_num_threads(1)

x_tr, x_te, y_tr, y_te = digits()
lab = pick_labels(y_tr, 10)
unl = torch.tensor(np.setdiff1d(np.arange(len(y_tr)), lab.numpy()))
def get_dls(x, y): return DataLoaders.from_dsets(list(zip(x, y)), list(zip(x_te, y_te)), bs=32, num_workers=0)
x_mix = torch.cat([x_tr[lab].repeat(6, 1, 1, 1), x_tr[unl]])
y_mix = torch.cat([y_tr[lab].repeat(6), torch.full((len(unl),), -100)])
def masked_ce(pred, targ): return F.cross_entropy(pred, targ, ignore_index=-100, reduction='sum') / (targ != -100).sum().clamp(min=1)
def teacher_cnn(): return digits_cnn(32, 64)
def student_cnn(): return digits_cnn(8, 16)
EPOCHS, SEEDS = dict(teacher=10, student=8, paraphraser=10), (0, 1, 2)  # the guide's; --quick: one epoch, one seed

set_seed(0, reproducible=True)
from fasterai.distill.losses import SoftTarget, DIST, NST, Affinity, PADL2, FT, KDSVD, ICKD, DISTPlus, ProjectorKD, CTKD, KTA, SSKD, RotatedViews, SKDInstance, SKDDirection

class EpochTimer(Callback):
    def __init__(self): self.times = []
    def before_train(self): self.start = time.perf_counter()
    def after_train(self): self.times.append(time.perf_counter() - self.start)

def fit_student(make_kd=None, seed=0):
    "The guide's student fit: accuracy (%) and the median seconds per epoch"
    set_seed(seed, reproducible=True)
    kd,timer = make_kd() if make_kd else None,EpochTimer()
    learn = Learner(get_dls(x_mix, y_mix), student_cnn(), masked_ce, opt_func=Adam, wd=1e-2, metrics=accuracy, cbs=[RandomAffine(), timer])
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(EPOCHS['student'], 1e-2, cbs=kd)
        return learn.validate()[1] * 100, float(np.median(timer.times))

maps   = dict(activations_student=['5', '9'], activations_teacher=['5', '9'])  # ReLU outputs at 8x8 and 4x4
pooled = dict(activations_student='11', activations_teacher='11')              # pooled features, 16 vs 64 values
last   = dict(activations_student='9', activations_teacher='9')                # the last stage's ReLU output, 16 vs 64 channels

def first_stage(cls, layer='9'):
    "A loss whose first stage trains on the teacher's features over the student's training batches: FT's paraphraser, KTA's auto-encoder, SSKD's head"
    def make(seed):
        set_seed(seed, reproducible=True)
        return cls.from_teacher(teacher, layer, get_dls(x_mix, y_mix).train, epochs=EPOCHS['paraphraser'])
    return make

def sskd_kd(loss):
    "The paper's recipe: the views, the task at 0.1, SoftTarget (T=4) on all four views at 0.9*4 = 0.9 + 2.7, SSKD at 10"
    return [RotatedViews(), KnowledgeDistillationCallback(teacher, [DistillLoss(partial(SoftTarget, T=4), weight=4),
                                                              DistillLoss(loss, weight=10/0.9, **pooled)], weight=0.9)]

# name -> (a function of the seed giving the loss, the layers, adapters)
LOSSES = {'NST': (lambda seed: NST, maps, False), 'Affinity': (lambda seed: Affinity, maps, False),
          'PADL2': (lambda seed: PADL2(), pooled, True), 'FT': (first_stage(FT), last, False), 'KDSVD': (lambda seed: KDSVD, maps, True),
          'ICKD': (lambda seed: ICKD, maps, True), 'DISTPlus': (lambda seed: DISTPlus, maps, True),
          'ProjectorKD': (lambda seed: ProjectorKD(), pooled, False), 'CTKD': (lambda seed: CTKD(), {}, False), 'KTA': (first_stage(KTA), last, False),
          'SoftTarget': (lambda seed: partial(SoftTarget, T=4), {}, False), 'DIST': (lambda seed: DIST, {}, False),
          'SSKD': (first_stage(SSKD, '11'), pooled, False),
          'SKDInstance': (lambda seed: partial(SKDInstance, mode='code'), {}, False),
          'SKDDirection': (lambda seed: partial(SKDDirection, mode='code'), {}, False)}
# they read the logits: weight 0.9 and no scale, as the guide's output losses (SoftTarget at T=4 and DIST: its rows, to compare with on another CPU)
LOGITS = {'DISTPlus', 'ProjectorKD', 'CTKD', 'SoftTarget', 'DIST', 'SSKD', 'SKDInstance', 'SKDDirection'}  # SSKD: its own recipe (sskd_kd)

def main(names):
    global teacher
    torch.set_num_threads(1)
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, one thread", flush=True)
    set_seed(0, reproducible=True)
    idx = lab[torch.arange(len(x_tr)) % len(lab)]
    learn = Learner(get_dls(x_tr[idx], y_tr[idx]), teacher_cnn(), CrossEntropyLossFlat(), opt_func=Adam, wd=1e-2, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(EPOCHS['teacher'], 1e-2, cbs=RandomAffine())
    teacher = learn.model
    print(f"teacher accuracy {learn.validate()[1]*100:.2f}", flush=True)
    # each term's raw size on an untrained student (weight 0, lr 0), as the guide does, gives its power-of-ten scale
    set_seed(0, reproducible=True)
    terms = [DistillLoss(LOSSES[n][0](0), name=n, adapters=LOSSES[n][2], **LOSSES[n][1]) for n in names if n != 'SSKD']
    learn = Learner(get_dls(x_mix, y_mix), student_cnn(), masked_ce, opt_func=Adam, metrics=accuracy)
    if terms:
        with learn.no_bar(): learn.fit(1, lr=0, cbs=KnowledgeDistillationCallback(teacher, terms, weight=0., log_terms='raw'))
    size = dict(zip(learn.recorder.metric_names[1:-1], learn.recorder.values[-1])) if terms else {}
    scale = {n: 1. if n in LOGITS else 10.0 ** round(math.log10(size['task_loss'] / size[n])) for n in names}
    print('scales', scale, flush=True)
    rows = []
    for seed in SEEDS:
        rows.append(('none (baseline)', seed, *fit_student(None, seed)))
        for n in names:
            make,layers,adapters = LOSSES[n]
            loss = make(seed)
            kd = (lambda: sskd_kd(loss)) if n == 'SSKD' else lambda: KnowledgeDistillationCallback(
                teacher, DistillLoss(loss, weight=scale[n], adapters=adapters, **layers), weight=0.9 if n in LOGITS else 0.5)
            rows.append((n, seed, *fit_student(kd, seed)))
            print(rows[-1], flush=True)
    res = pd.DataFrame(rows, columns=['loss', 'seed', 'accuracy', 's_per_epoch'])
    acc = res.pivot(index='loss', columns='seed', values='accuracy').add_prefix('seed ')
    gain = acc.sub(acc.loc['none (baseline)'], axis=1)
    t = res.groupby('loss')['s_per_epoch'].median()
    out = acc.assign(mean=acc.mean(axis=1), std=acc.std(axis=1), gain=gain.mean(axis=1), gain_std=gain.std(axis=1), epoch_x_baseline=t / t['none (baseline)'])
    print(out.loc[['none (baseline)', *names]].round(2).to_string())

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--losses', default=','.join(LOSSES), help=f"comma-separated, among {', '.join(LOSSES)}")
    p.add_argument('--quick', action='store_true', help='smoke run: one seed, one epoch for every model (numbers not meaningful)')
    a = p.parse_args()
    names = a.losses.split(',')
    if a.quick: EPOCHS, SEEDS = dict.fromkeys(EPOCHS, 1), (0,)
    if unknown := [n for n in names if n not in LOSSES]: p.error(f"unknown losses {unknown}: choose among {', '.join(LOSSES)}")
    main(names)
