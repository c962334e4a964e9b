"The benchmark's models, data and configurations; the callback is used through its public API only"
from __future__ import annotations
import copy, functools
from collections import OrderedDict
import torch, torch.nn as nn
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.callback.core import Callback
from fasterai.distill.distillation_callback import KnowledgeDistillationCallback as KD
from fasterai.distill.losses import SoftTarget, Attention

BS, N_CLASSES, W_STUDENT = 64, 10, 16
W_TEACHER = dict(resnet=50, flat=52)  # about 10x the student's MACs in each layout
LAYERS = ['b1', 'b2', 'b3']            # the same names and spatial sizes in both models: paired one to one
CACHE_MB = 256

def block(ci, co, stride):
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))

def cnn(w, layout='resnet', n_out=N_CLASSES):
    """3x32x32 -> `n_out` classes. resnet: a stem that halves the resolution, then three stages of two conv blocks, whose
    outputs are the maps `b1`, `b2`, `b3`; flat: one conv block per stage and no stem (maps 4x larger, same MACs)"""
    head = OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(4*w, n_out))
    if layout == 'flat': return nn.Sequential(OrderedDict(b1=block(3, w, 1), b2=block(w, 2*w, 2), b3=block(2*w, 4*w, 2), **head))
    def stage(ci, co, s): return nn.Sequential(block(ci, co, s), block(co, co, 1))
    return nn.Sequential(OrderedDict(stem=block(3, w, 2), b1=stage(w, w, 1), b2=stage(w, 2*w, 2), b3=stage(2*w, 4*w, 2), **head))

def macs(model):
    "Multiply-accumulates of one item's forward through the Conv2d and Linear layers"
    n = []
    hs = [m.register_forward_hook(lambda m, i, o: n.append(o.numel() * (m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.in_features)))
          for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad(): model.eval()(torch.zeros(1, 3, 32, 32))
    for h in hs: h.remove()
    return sum(n)

def batches(n, seed, n_out=N_CLASSES):
    "`n` synthetic batches, the same in every process for the same `seed`"
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BS, 3, 32, 32, generator=g), torch.randint(0, n_out, (BS,), generator=g)) for _ in range(n)]

class Workload:
    "The teacher, the student's initial weights and the pre-batched data; `learner(name)` builds one configuration"
    def __init__(self, n_train, n_valid, layout='resnet'):
        torch.manual_seed(0)
        self.layout, self.teacher, student = layout, cnn(W_TEACHER[layout], layout), cnn(W_STUDENT, layout)
        self.state = student.state_dict()
        self.train, self.valid = batches(n_train, 1), batches(n_valid, 2)
        # bs=None: the items are whole batches already, the loader only hands them over
        self.dls = DataLoaders(DataLoader(self.train, bs=None, shuffle=True), DataLoader(self.valid, bs=None))

    @functools.cached_property
    def teacher_cl(self):
        "The same teacher, put in channels-last memory format by its user"
        return copy.deepcopy(self.teacher).to(memory_format=torch.channels_last)

    def callback(self, name):
        t, L = self.teacher, LAYERS
        return {'student':      lambda: None,
                'bare':         lambda: BareTeacher(t),
                'kd_soft':      lambda: KD(t, SoftTarget, weight=0.5),
                'kd_soft_user_cl': lambda: KD(self.teacher_cl, SoftTarget, weight=0.5),
                'kd_attn':      lambda: KD(t, Attention, L, L, weight=0.5),
                'kd_combined':  lambda: KD(t, combined, L, L, weight=0.5),
                'kd_list':      lambda: KD(t, [SoftTarget, Attention], L, L, weight=0.5),
                'kd_cache_fill': lambda: KD(t, SoftTarget, weight=0.5, cache_mb=CACHE_MB),
                'kd_cached':    lambda: KD(t, SoftTarget, weight=0.5, cache_mb=CACHE_MB)}[name]()

    def learner(self, name, cbs=()):
        student = cnn(W_STUDENT, self.layout)
        student.load_state_dict(self.state)
        cb = self.callback(name)
        learn = Learner(self.dls, student, loss_func=nn.CrossEntropyLoss(), cbs=[*cbs, *([cb] if cb else [])])
        # nothing printed: no progress bar, and a logger that does nothing, yet still lets the callback fill its columns
        if hasattr(learn, 'progress'): learn.remove_cb(learn.progress)
        learn.logger = silent
        return learn

COMBINED_MAPS = []  # whether `combined` received feature maps: else its Attention term compares nothing
def combined(**kw):
    COMBINED_MAPS.append(bool(kw.get('fm_s')))
    return SoftTarget(**kw) + Attention(**kw)

class BareTeacher(Callback):
    "The least any distillation callback does: one teacher pass per training batch (eval, no autograd), output dropped"
    def __init__(self, teacher): self.teacher, self.run_valid = teacher, False
    def before_fit(self): self.teacher.eval()
    def before_batch(self):
        with torch.no_grad(): self.teacher(*self.xb)

def silent(*args, **kwargs): pass
