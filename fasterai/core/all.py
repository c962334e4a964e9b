# Hand-maintained re-export (like fastai's own `all.py` files); not generated from a notebook.
from .schedule import *
