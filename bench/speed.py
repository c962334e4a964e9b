#!/usr/bin/env python
"""Speed and memory of `KnowledgeDistillationCallback` on the CPU, per batch inside the epochs. See bench/README.md.

    python bench/speed.py              # full run: 5 minutes on a quiet machine, 10 on a loaded one
    python bench/speed.py --quick      # smoke run: every path once, numbers not meaningful"""
from __future__ import annotations
import argparse, ctypes, os, platform, statistics, sys, time
import torch

ROWS = {  # name -> label; 'bare' is the reference for the library's own cost, 'kd_cached' is compared with the student alone
    'bare': 'teacher run by a bare callback (no loss: the least any KD callback costs)',
    'kd_soft': 'KD logits (SoftTarget)',
    'kd_soft_user_cl': 'KD logits, teacher in channels-last memory format, set by the user',
    'kd_attn': 'KD 3 feature pairs (Attention)',
    'kd_combined': 'KD combined(**kw) = SoftTarget + Attention, 3 pairs',
    'kd_list': 'KD loss=[SoftTarget, Attention], 3 pairs',
    'kd_cache_fill': 'KD SoftTarget, cache_mb=256: 1st epoch (fills)',
    'kd_cached': 'KD SoftTarget, cache_mb=256: later epochs (hits), × student alone',
}
FULL = dict(n_train=8, n_valid=6, rounds=8, val_rounds=20, cl_rounds=10)
QUICK = dict(n_train=3, n_valid=3, rounds=1, val_rounds=1, cl_rounds=1)

def keep_freed_memory() -> bool:
    "glibc: keep freed memory in the process rather than return it to the system and page-fault it back at the next batch"
    try: libc = ctypes.CDLL('libc.so.6')
    except OSError: return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt's codes; 32 MiB is the largest mmap threshold
    return all(libc.mallopt(k, v) == 1 for k, v in ((M_TRIM_THRESHOLD, 2**30), (M_TOP_PAD, 2**28), (M_MMAP_THRESHOLD, 2**25)))

def spread(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f'{statistics.median(xs):.3f} ({q[0]:.2f}–{q[2]:.2f})'

def main(a):
    from fastai import __version__ as fastai_version
    import workload as W, timing as T, memory as M
    cfg = dict(QUICK if a.quick else FULL, **({'rounds': a.rounds} if a.rounds else {}))
    torch.set_num_threads(a.threads)
    kept = not a.default_malloc and keep_freed_memory()
    t_start, load0 = time.perf_counter(), os.getloadavg()
    w = W.Workload(cfg['n_train'], cfg['n_valid'], a.layout)
    student = W.cnn(W.W_STUDENT, a.layout)
    ms, mt = W.macs(student), W.macs(w.teacher)
    print('# KnowledgeDistillationCallback: cost per batch' + (' (--quick: numbers not meaningful)' if a.quick else ''))
    print(f'\n- CPU: {T.cpu_model()}, {len(os.sched_getaffinity(0))} usable cores; torch.get_num_threads() = {torch.get_num_threads()}; '
          f'torch {torch.__version__} (CPU kernels: {torch.backends.cpu.get_cpu_capability()}), fastai {fastai_version}, Python {platform.python_version()}')
    print(f'- student {ms/1e6:.2f} MMACs/item, teacher {mt/1e6:.2f} (×{mt/ms:.1f}), layout {a.layout}; synthetic 3x32x32, bs={W.BS}, '
          f"{cfg['n_train']} train / {cfg['n_valid']} valid batches an epoch; glibc malloc: " + ('freed memory kept (mallopt)' if kept else 'default'))
    names = list(ROWS)
    ep, errors = T.time_epochs(w, names, cfg['rounds'], log=print if a.verbose else (lambda *x, **k: None))
    names = [n for n in names if n not in errors]
    vals = T.time_validation(w, [n for n in names if n not in ('bare', 'kd_cache_fill')], cfg['val_rounds'])
    t_def, t_cl, cl_ratio = T.channels_last_costs(w, cfg['cl_rounds'])
    mem = None
    if not a.no_memory:
        mnames = ['student'] + [n for n in names if n not in ('bare', 'kd_cache_fill')]
        mem = M.measure(mnames[:3] if a.quick else mnames, a.threads, a.layout, 8, 2)
        if 'kd_cached' in mem: mem['kd_cache_fill'] = mem['kd_cached']

    med, CPU, WALL = statistics.median, 1, 0
    def ratios(name, k):  # per round; the cached configuration's against the student alone
        return [r['kd'][k] / (r['student'][k] + (0 if name == 'kd_cached' else r['teacher'][k])) for r in ep[name]]
    def peak(name):
        if not mem or name not in mem: return None, '—'
        x = mem[name]['peak_kib'] / mem['student']['peak_kib']
        return x, f"{x:.3f}, {mem[name]['peak_kib'] / 1024:.0f} (+{(mem[name]['peak_kib'] - mem[name]['before_kib']) / 1024:.0f})"
    all_rounds = [r for rs in ep.values() for r in rs]
    bare, fails = (med(ratios('bare', CPU)) if 'bare' in ep else float('nan')), []
    print('\n| configuration | CPU ms per batch | × ideal, CPU (≤ 1.05) | × ideal, wall | × bare | per-fit extra, CPU ms '
          '| validation × student (≤ 1.02) | peak RSS × student (≤ 1.05), MB (+ over pre-fit) |\n|---|---:|---:|---:|---:|---:|---:|---:|')
    print(f"| student alone | {1e3*med([r['student'][CPU] for r in all_rounds]):.1f} | | | | | | {peak('student')[1]} |")
    print(f"| ideal = student + teacher alone (eval, no_grad) | {1e3*med([r['student'][CPU] + r['teacher'][CPU] for r in all_rounds]):.1f} "
          f"| 1.000 | 1.000 | | | | |")
    for name, label in ROWS.items():
        if name in errors:
            print(f'| {label} | error: {errors[name]} | | | | | | |'); fails.append(f'{label}: error'); continue
        rs, r = ep[name], med(ratios(name, CPU))
        extra = med([x['extra'] for x in rs])
        v = med([x[CPU] for x in vals[name]]) if name in vals else None
        p, p_txt = peak(name)
        print(f"| {label} | {1e3*med([x['kd'][CPU] for x in rs]):.1f} | {spread(ratios(name, CPU))} | {med(ratios(name, WALL)):.3f} "
              f"| {'—' if name in ('bare', 'kd_cached') else f'{r / bare:.3f}'} | {1e3*extra:.1f} | {'—' if v is None else f'{v:.3f}'} | {p_txt} |")
        if name != 'bare':
            fails += [f'{label}: {what} {x:.3f} > {lim}' for what, x, lim in (('batch', r, 1.10 if name == 'kd_cached' else 1.05),
                      ('validation', v, 1.02), ('peak RSS', p, 1.05)) if x is not None and x > lim]
    print(f"\nTeacher pass per batch: default {1e3*t_def:.1f} ms, channels-last weights {1e3*t_cl:.1f} ms (× {cl_ratio:.3f}).")
    if W.COMBINED_MAPS and not all(W.COMBINED_MAPS): fails.append('combined(**kw) got no feature maps')
    print(f'Load average (1 min) at start / end: {load0[0]:.1f} / {os.getloadavg()[0]:.1f}; wall time {time.perf_counter() - t_start:.0f} s.')
    print('Targets: ' + ('not evaluated (--quick).' if a.quick else 'all met.' if not fails else 'NOT met: ' + '; '.join(fails)))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='smoke run: every path once, numbers not meaningful')
    p.add_argument('--rounds', type=int, help=f"timing rounds (default {FULL['rounds']})")
    p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads (default 1)')
    p.add_argument('--layout', choices=['resnet', 'flat'], default='resnet', help='flat: maps 4x larger for the same MACs')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory processes')
    p.add_argument('--default-malloc', action='store_true', help="time with glibc's default settings")
    p.add_argument('--verbose', action='store_true', help='print each round')
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(p.parse_args())
