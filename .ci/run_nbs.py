"""Run notebooks' code cells (slow ones included) in plain Python, without nbdev or Jupyter.

nbdev 2 needs fastcore<2, so `nbdev_test` cannot run next to the newest fastai (fastcore 2.x). This runner lets
`.ci/newest-fastai` check the library there: each notebook runs cell by cell in a fresh namespace, with `show_doc` stubbed.
Usage: python .ci/run_nbs.py NOTEBOOK...
"""
import __future__, json, sys, time, types, traceback, os
from pathlib import Path

def _stub_nbdev():
    "`from nbdev.showdoc import *` gives a no-op `show_doc`"
    nbdev, showdoc = types.ModuleType('nbdev'), types.ModuleType('nbdev.showdoc')
    showdoc.show_doc = lambda *args, **kwargs: None
    showdoc.__all__ = ['show_doc']
    nbdev.showdoc = showdoc
    sys.modules.update({'nbdev': nbdev, 'nbdev.showdoc': showdoc})

def _skip(src):
    "Cells nbdev_test would skip: `eval: false`, or flagged with a flag other than `slow`"
    for l in src.splitlines():
        l = l.replace(' ', '')
        if l.startswith('#|eval:false') or l.startswith('#|skip_exec'): return True
    return False

def run(path):
    cells = [''.join(c['source']) for c in json.loads(Path(path).read_text())['cells'] if c['cell_type'] == 'code']
    main, old_main = types.ModuleType('__main__'), sys.modules['__main__']
    sys.modules['__main__'] = main  # classes defined in cells must pickle, as in a notebook
    ns = main.__dict__
    cwd = os.getcwd(); os.chdir(Path(path).parent)
    try:
        for i, src in enumerate(cells):
            if _skip(src) or not src.strip(): continue
            code = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!')))
            # as IPython does, a cell's `from __future__ import annotations` holds for the cells after it (the modules have it)
            exec(compile(code, f'{path} [cell {i}]', 'exec', flags=__future__.annotations.compiler_flag), ns)
    finally: os.chdir(cwd); sys.modules['__main__'] = old_main

if __name__ == '__main__':
    import matplotlib; matplotlib.use('Agg')
    _stub_nbdev()
    failed = []
    for p in sys.argv[1:]:
        t = time.time()
        try: run(p); print(f'ok    {p} ({time.time()-t:.0f} s)')
        except BaseException:
            traceback.print_exc(); failed.append(p); print(f'FAIL  {p}')
    print(f'run_nbs: {len(sys.argv)-1-len(failed)} passed, {len(failed)} failed')
    sys.exit(1 if failed else 0)
