# Hand-maintained re-export (like fastai's own `all.py` files); not generated from a notebook.
from fastai.basics import *
from ..core.schedule import *
from .losses import *
from .distillation_callback import *
from .topk import *
from .cache import *
