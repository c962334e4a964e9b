#!/usr/bin/env python
"""The language-model tutorial's recipe over seeds and float paths: is the distilled student's gain larger than its spread?

    python bench/lm_seeds.py                    # seeds 0-2 on three float paths (AVX-512, AVX2, no SIMD), 2 at a time: ~10 min
    python bench/lm_seeds.py --quick            # one seed, one path, a tenth of the windows: a smoke run

Each float path runs in its own process with `ATEN_CPU_CAPABILITY` set (PyTorch's vector kernels limited to that
instruction set), so sums of floats round differently, as on another CPU. In each process the teacher is trained once
(seed 0), then for each seed three students with the same steps and batches: cross-entropy alone, online
`SoftTarget` from the teacher, and `SoftTarget` from a top-k `TeacherStore` filled once (`teacher=None`). Prints a
Markdown table of held-out perplexity and next-token accuracy, and the gains with their spread."""
from __future__ import annotations
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')

# The tutorial's recipe (nbs/tutorials/distill/language_model.ipynb): keep the two in step
VOCAB, SL, BS = 2000, 32, 64
TEACHER, STUDENT = (96, 192), (32, 32)      # WordLSTM(vocab, emb, hid)
T_EPOCHS, T_LR, S_EPOCHS, S_LR = 2, 3e-3, 1, 1e-2
TEMP, WEIGHT, TOPK = 1., 0.5, 32

def run(seeds, quick):
    "One float path (this process): the teacher once, then the three students per seed; one JSON line per model"
    import torch
    from fastai.basics import Learner, DataLoaders, CrossEntropyLossFlat, accuracy, Perplexity, set_seed, partial
    from fastai.callback.all import ProgressCallback  # noqa: F401  (no_bar, fit_one_cycle)
    from fasterai.distill.all import KnowledgeDistillationCallback, SoftTarget, TeacherStore
    from fasterai.distill.examples import docstring_lm, WordLSTM
    torch.set_num_threads(1)
    tr, va, _ = docstring_lm(VOCAB, SL)
    if quick: tr, va = tr[::10], va[::10]

    def fit(model, seed, epochs, lr, cbs=None):
        set_seed(seed, reproducible=True)
        learn = Learner(DataLoaders.from_dsets(tr, va, bs=BS, num_workers=0), model, CrossEntropyLossFlat(), metrics=[accuracy, Perplexity()])
        t0 = time.process_time()
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr, cbs=cbs)
        secs = time.process_time() - t0
        with learn.no_bar(): _, acc, ppl = learn.validate()
        return dict(ppl=float(ppl), acc=100 * float(acc), cpu_s=secs)

    def out(name, seed, r): print(json.dumps(dict(model=name, seed=seed, **r)), flush=True)
    set_seed(0, reproducible=True)
    teacher = WordLSTM(VOCAB, *TEACHER)
    out('teacher', 0, fit(teacher, 0, T_EPOCHS, T_LR))
    teacher.eval()
    path = Path(tempfile.mkdtemp()) / 'teacher.db'
    fill_dl = DataLoaders.from_dsets(tr, va, bs=BS, num_workers=0).train
    TeacherStore(path, fmt='fp16', topk=TOPK).fill(teacher, fill_dl)
    soft = partial(SoftTarget, T=TEMP)
    for seed in seeds:
        torch.manual_seed(seed); out('student', seed, fit(WordLSTM(VOCAB, *STUDENT), seed, S_EPOCHS, S_LR))
        torch.manual_seed(seed); out('online KD', seed, fit(WordLSTM(VOCAB, *STUDENT), seed, S_EPOCHS, S_LR,
                                                            KnowledgeDistillationCallback(teacher, soft, weight=WEIGHT)))
        torch.manual_seed(seed); out(f'top-{TOPK} store KD', seed, fit(WordLSTM(VOCAB, *STUDENT), seed, S_EPOCHS, S_LR,
                                     KnowledgeDistillationCallback(None, soft, weight=WEIGHT, store=TeacherStore(path, readonly=True))))

def child(cap, seeds, quick):
    "The runs of one float path, in a fresh process with `ATEN_CPU_CAPABILITY=cap`"
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
    args = [sys.executable, os.path.abspath(__file__), '--child', '--seeds', *map(str, seeds)] + (['--quick'] if quick else [])
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'{cap}: exit {r.returncode}\n{r.stderr[-3000:]}')
    return [dict(json.loads(l), path=cap) for l in r.stdout.splitlines() if l.startswith('{')]

def main(a):
    import torch
    from concurrent.futures import ThreadPoolExecutor
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from timing import cpu_model
    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.parallel) as ex: rows = [r for rs in ex.map(lambda c: child(c, a.seeds, a.quick), a.paths) for r in rs]
    print(f'# The language-model tutorial over seeds and float paths' + (' (--quick: numbers not meaningful)' if a.quick else ''))
    print(f'\n- `python bench/lm_seeds.py {" ".join(sys.argv[1:])}`'.rstrip())
    print(f'- CPU: {cpu_model()}; torch {torch.__version__}, one thread per process, {a.parallel} processes at a time; Python {platform.python_version()}')
    print(f'- vocabulary {VOCAB}, windows of {SL}, batches of {BS}; teacher WordLSTM{TEACHER} {T_EPOCHS} epochs, students WordLSTM{STUDENT} '
          f'{S_EPOCHS} epoch(s); SoftTarget T={TEMP:g}, weight {WEIGHT}; store fp16 top {TOPK}\n')
    print('| float path | model | seed | held-out perplexity | next-token accuracy (%) | CPU s (fit) |\n|---|---|---:|---:|---:|---:|')
    for r in rows: print(f"| {r['path']} | {r['model']} | {r['seed']} | {r['ppl']:.2f} | {r['acc']:.2f} | {r['cpu_s']:.0f} |")
    base = {(r['path'], r['seed']): r for r in rows if r['model'] == 'student'}
    print('\n| method | perplexity gain vs student alone: mean ± std (min, max) | accuracy gain, points: mean ± std (min, max) | runs |\n|---|---:|---:|---:|')
    for m in dict.fromkeys(r['model'] for r in rows if 'KD' in r['model']):
        g = [(base[r['path'], r['seed']]['ppl'] - r['ppl'], r['acc'] - base[r['path'], r['seed']]['acc']) for r in rows if r['model'] == m]
        def fmt(xs): return f'{statistics.mean(xs):+.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2f} ({min(xs):+.2f}, {max(xs):+.2f})'
        print(f'| {m} | {fmt([p for p, _ in g])} | {fmt([x for _, x in g])} | {len(g)} |')
    print(f'\nWall time {time.perf_counter() - t0:.0f} s.')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--paths', nargs='+', default=['avx512', 'avx2', 'default'], help='values of ATEN_CPU_CAPABILITY')
    p.add_argument('--parallel', type=int, default=2, help='float paths run at the same time')
    p.add_argument('--quick', action='store_true', help='one tenth of the windows: a smoke run')
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick and a.paths == p.get_default('paths'): a.paths, a.seeds = ['default'], a.seeds[:1]
    run(a.seeds, a.quick) if a.child else main(a)
