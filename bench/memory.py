#!/usr/bin/env python
"""Peak resident memory of one configuration, in this fresh process (the peak only grows, so one process each).

    python bench/memory.py kd_soft [--threads 1] [--layout resnet] [--n-train 8] [--epochs 2]   # prints one line of JSON

The process holds the teacher and has run it once, whatever the configuration. The peak is VmHWM after a reset through
/proc/self/clear_refs just before `fit` (so that the imports do not mask it), or `ru_maxrss` where there is no reset.
glibc's memory settings are left as they are: the memory a user's process sees."""
from __future__ import annotations
import argparse, gc, json, os, resource, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

def status_kib(field):
    "A field of /proc/self/status, in KiB (Linux)"
    for l in open('/proc/self/status'):
        if l.startswith(field + ':'): return int(l.split()[1])

def reset_peak() -> bool:
    "Reset VmHWM, the peak resident memory, to the current RSS; False where the kernel cannot"
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')  # Linux >= 4.0: VmHWM := VmRSS
        return True
    except OSError: return False

def run(name, threads, layout, n_train, epochs):
    import torch
    from workload import Workload
    torch.set_num_threads(threads)
    w = Workload(n_train, max(1, n_train // 3), layout)
    if name == 'kd_soft_user_cl': w.teacher = w.teacher_cl = w.teacher.to(memory_format=torch.channels_last)  # one teacher
    with torch.no_grad(): w.teacher.eval()(w.train[0][0])
    learn = w.learner(name)
    gc.collect()
    before, reset = status_kib('VmRSS'), reset_peak()
    learn.fit(epochs, 1e-3)
    peak = status_kib('VmHWM') if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(config=name, peak_kib=peak, before_kib=before, reset=reset)

def measure(names, threads, layout, n_train, epochs, parallel=1):
    "{name: run(name, ...)}, each in a fresh process with the environment as it is"
    def one(name):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), name, '--threads', str(threads), '--layout', layout,
                            '--n-train', str(n_train), '--epochs', str(epochs)], capture_output=True, text=True)
        line = next((l for l in r.stdout.splitlines()[::-1] if l.startswith('{')), None)
        if r.returncode or line is None: raise RuntimeError(f'memory run {name!r} failed (exit {r.returncode}):\n{r.stderr[-3000:]}')
        return json.loads(line)
    with ThreadPoolExecutor(max(1, parallel)) as ex: return dict(zip(names, ex.map(one, names)))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config'); p.add_argument('--threads', type=int, default=1); p.add_argument('--layout', default='resnet')
    p.add_argument('--n-train', type=int, default=8); p.add_argument('--epochs', type=int, default=2)
    a = p.parse_args()
    print(json.dumps(run(a.config, a.threads, a.layout, a.n_train, a.epochs)))
