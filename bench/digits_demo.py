#!/usr/bin/env python
"""Distil a CNN teacher into an MLP student 12 times smaller, on real data, in about a minute on 2 idle CPU cores.

    bash .ci/venv && .venv/bin/python bench/digits_demo.py
    .venv/bin/python bench/digits_demo.py --quick    # smoke run: one epoch per model, numbers not meaningful

It runs PyTorch on one thread: these models are so small that more threads only wait for each other (on a busy
2-core machine, two threads made it six times slower). `--threads N` changes that.

The data are scikit-learn's `load_digits` (1,797 real 8x8 images, no download), split 70/30 into 1,257 training
and 540 test images. Labels are scarce: only 200 training images (20 per class) keep their label. The other
1,057 are used without labels, which is where distillation pays off:

1. the teacher, a small CNN, is trained on the 200 labelled images (with random-affine augmentation);
2. the student, an MLP, is trained on the same 200 images with cross-entropy: the baseline;
3. the same MLP is distilled: cross-entropy on the labelled images plus `SoftTarget(T=4)` on all 1,257 images,
   through `KnowledgeDistillationCallback`, whose weight on `SoftTarget` grows from 0 to 0.9 along a cosine. The
   unlabelled images carry the label -100, which the task loss ignores. The images are not augmented, so the
   teacher's outputs are cached (`cache_mb`) and it runs once per image.

One seed, the first of the three that the tutorial `nbs/tutorials/distill/distill_callback.ipynb` runs: on the same
machine it prints the tutorial's numbers for seed 0, since the data, the models and the augmentation are the
tutorial's (`fasterai.distill.examples`), drawn in the same order. Single runs move by about a point with the seed and with the
CPU (its vector instructions change how floats are rounded), so compare runs over seeds, as the tutorial does.
"""
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # printed when fastai is imported
import os, platform, sys, time
from pathlib import Path
import torch, torch.nn.functional as F, fastai
from fastai.basics import *
from fastai.callback.progress import *
from fasterai.distill.all import *
from fasterai.distill.examples import digits, pick_labels, digits_cnn, digits_mlp, RandomAffine

SEED, PER_CLASS = 0, 20
EPOCHS = (1, 1, 1) if '--quick' in sys.argv else (6, 8, 12)  # teacher, student, distilled student
torch.set_num_threads(int(sys.argv[sys.argv.index('--threads') + 1]) if '--threads' in sys.argv else 1)

# Data: pixels in [0, 1], images shaped (1, 8, 8) so that the CNN and the MLP (which flattens) take the same input
x_tr, x_te, y_tr, y_te = digits()
lab = pick_labels(y_tr, PER_CLASS, SEED)
y_part = torch.full_like(y_tr, -100)  # -100: no label
y_part[lab] = y_tr[lab]

def get_dls(x, y, repeat):
    "Training images repeated `repeat` times per epoch (fewer, longer epochs: fastai validates after each), test set"
    train = list(zip(x.repeat(repeat, 1, 1, 1), y.repeat(repeat)))
    return DataLoaders.from_dsets(train, list(zip(x_te, y_te)), bs=32, num_workers=0)

def dls_lab(): return get_dls(x_tr[lab], y_tr[lab], repeat=30)  # 200 labelled images: 187 batches per epoch
def dls_all(): return get_dls(x_tr, y_part, repeat=5)            # all 1,257 images, 200 of them labelled: 196 batches per epoch

def masked_ce(pred, targ):
    "Cross-entropy over the labelled items only (label -100 = unlabelled); 0, not NaN, for a batch without any"
    return F.cross_entropy(pred, targ, ignore_index=-100, reduction='sum') / (targ != -100).sum().clamp(min=1)

results = []
def train(name, get_dls, get_model, epochs, loss_func=CrossEntropyLossFlat(), cbs=None):
    "Train a new `get_model()` on `get_dls()` with AdamW (lr 3e-3, wd 1e-2) and one-cycle; record accuracy, size, time"
    print(f'\n{name}')
    set_seed(SEED, reproducible=True)  # then the data and the model, in the tutorial's order: the same numbers
    dls, model = get_dls(), get_model()
    learn = Learner(dls, model, loss_func, opt_func=Adam, wd=1e-2, metrics=accuracy)  # fastai's Adam: decoupled wd = AdamW
    start = time.perf_counter()
    learn.fit_one_cycle(epochs, 3e-3, cbs=cbs)
    secs = time.perf_counter() - start
    with learn.no_bar(): acc = learn.validate()[1]
    results.append((name, acc, sum(p.numel() for p in model.parameters()), secs))
    return learn

teacher = train('Teacher: CNN on the 200 labelled images', dls_lab, digits_cnn, EPOCHS[0], cbs=RandomAffine()).model
train('Student without distillation: MLP on the 200 labelled images', dls_lab, digits_mlp, EPOCHS[1])
train('Distilled student: MLP on 200 labelled + 1,057 unlabelled images', dls_all, digits_mlp, EPOCHS[2], loss_func=masked_ce,
      cbs=KnowledgeDistillationCallback(teacher, partial(SoftTarget, T=4), weight=0.9, schedule=cos, cache_mb=4))

print(f'\nTest accuracy on {len(x_te)} images, seed {SEED}, {PER_CLASS} labels per class')
print(f"{'model':<32}{'test accuracy':>15}{'parameters':>12}{'train time':>12}")
for name, acc, n, secs in results:
    print(f"{name.split(':')[0]:<32}{acc:>15.2%}{n:>12,}{secs:>11.1f}s")
info = Path('/proc/cpuinfo')
cpu = next((l.split(':', 1)[1].strip() for l in info.read_text().splitlines() if l.startswith('model name')), None) if info.exists() else None
print(f'\n{cpu or platform.processor() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} CPUs, '
      f'{torch.get_num_threads()} torch threads, Python {platform.python_version()}, torch {torch.__version__}, fastai {fastai.__version__}')
