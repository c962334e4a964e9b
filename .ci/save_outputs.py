"""Run notebooks top to bottom and save their outputs in them (the docs render the stored outputs; quarto does not run them).

Usage: .venv/bin/python .ci/save_outputs.py NOTEBOOK... [--cells ID,ID]   then `nbdev_clean`. Slow cells run too. Use it
after a change that alters what a page shows, such as the messages in `nbs/distill/workflows.ipynb`, whose table a test
compares with the messages the code gives now. With `--cells`, every cell still runs, but only the outputs of the cells
with those ids are replaced: the others keep what they showed (measured figures quoted in the prose, say).
"""
import os, sys, time
from pathlib import Path
from fastcore.xtras import working_directory
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

# fastprogress chooses its console bars outside Jupyter: the pages show fastai's HTML progress tables, as in a notebook
_NOTEBOOK_BARS = """
import fastprogress.fastprogress as _fp, fastai.callback.progress as _pg
_fp.IN_NOTEBOOK = True
_fp.master_bar = _pg.master_bar = _fp.NBMasterBar
_fp.progress_bar = _pg.progress_bar = _fp.NBProgressBar
"""

def _html(o) -> str: return ''.join(o.get('data', {}).get('text/html', '')) if o.get('output_type') == 'display_data' else ''

def _final(outputs:list) -> list:
    "Outputs without the progress bars' intermediate states: Jupyter replaces them in place, execnb appends each one"
    return [o for o in outputs if not (_html(o) and ('<progress' in _html(o) or not _html(o).strip()))]

if __name__ == '__main__':
    import matplotlib; matplotlib.use('Agg')
    args = sys.argv[1:]
    only = set(args[args.index('--cells')+1].split(',')) if '--cells' in args else None
    if only: args = args[:args.index('--cells')] + args[args.index('--cells')+2:]
    for p in map(Path, args):
        t, nb = time.time(), read_nb(p)
        old = {c.get('id'): c.get('outputs') for c in nb.cells}
        os.environ['FASTERAI_SAVING_OUTPUTS'] = '1'  # a test that compares a page with its stored outputs skips: they are being made
        shell = CaptureShell(path=p.parent)
        shell.run(_NOTEBOOK_BARS)
        with working_directory(p.parent): shell.run_all(nb, exc_stop=True)
        for c in nb.cells:
            if 'outputs' in c: c['outputs'] = _final(c['outputs'])
        if only:
            for c in nb.cells:
                if c.get('id') not in only and 'outputs' in c: c['outputs'] = old[c.get('id')]
        write_nb(nb, p)
        print(f'saved {p} ({time.time()-t:.0f} s)' + (f', the outputs of {len(only)} cells' if only else ''))
