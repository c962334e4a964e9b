"""Run notebooks top to bottom and save their outputs in them (the docs render the stored outputs; quarto does not run them).

Usage: .venv/bin/python .ci/save_outputs.py NOTEBOOK...   then `nbdev_clean`. Slow cells run too. Use it after a change
that alters what a page shows, such as the messages in `nbs/distill/workflows.ipynb`, whose table a test compares with
the messages the code gives now.
"""
import os, sys, time
from pathlib import Path
from fastcore.xtras import working_directory
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

if __name__ == '__main__':
    import matplotlib; matplotlib.use('Agg')
    for p in map(Path, sys.argv[1:]):
        t, nb = time.time(), read_nb(p)
        os.environ['FASTERAI_SAVING_OUTPUTS'] = '1'  # a test that compares a page with its stored outputs skips: they are being made
        with working_directory(p.parent): CaptureShell(path=p.parent).run_all(nb, exc_stop=True)
        write_nb(nb, p)
        print(f'saved {p} ({time.time()-t:.0f} s)')
