#!/usr/bin/env python
"""SQLite, as `TeacherStore` uses it, against LMDB: insert and lookup of rows of a store's sizes, 64 keys at a time.

    pip install --target /tmp/lmdbpkg lmdb                       # lmdb is not a dependency of fasterai
    python bench/store_lmdb.py --lmdb /tmp/lmdbpkg              # 20,000 rows, 300 lookups: about a minute
    python bench/store_lmdb.py --lmdb /tmp/lmdbpkg --quick      # smoke run: 2,000 rows, 20 lookups

The keys are what `item_keys` makes (16 bytes per item). The SQLite side has the store's pragmas and table (rows
appended in order, found through a unique index on the first 8 bytes of the key, the whole key checked), written
out here since only the store knows them: keep them in step with `nbs/distill/cache.ipynb`. The rows: 44 bytes (10
fp32 logits and a checksum), 2,004 (1,000 fp16 logits) and 4,004 (1,000 fp32). Prints a Markdown table.
"""
from __future__ import annotations
import argparse, os, platform, random, sqlite3, sys, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # printed when fastai is imported
import torch
from fasterai.distill.cache import item_keys

SIZES = (44, 2004, 4004)

def sqlite_times(path, keys, val, look, bs):
    "Seconds per insert (and commit) of `bs` rows and per lookup of `bs` keys, as the store does them"
    con = sqlite3.connect(path, isolation_level=None)
    for pragma in ('page_size=16384', 'journal_mode=WAL', 'synchronous=NORMAL'): con.execute('PRAGMA ' + pragma)
    con.execute('CREATE TABLE items (r INTEGER PRIMARY KEY, id INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL)')
    con.execute('CREATE UNIQUE INDEX items_id ON items (id)')
    iid = lambda k: int.from_bytes(k[:8], 'little', signed=True)
    t = time.perf_counter()
    for i in range(0, len(keys), bs):
        con.execute('BEGIN IMMEDIATE')
        con.executemany('INSERT OR IGNORE INTO items (id, k, v) VALUES (?, ?, ?)', [(iid(k), k, val) for k in keys[i:i+bs]])
        con.execute('COMMIT')
    write = (time.perf_counter() - t) / (len(keys)/bs)
    q = f"SELECT id, k, v FROM items WHERE id IN ({','.join('?'*bs)})"
    t = time.perf_counter()
    for b in look: found = {r[0]: r[1:] for r in con.execute(q, [iid(k) for k in b])}
    read = (time.perf_counter() - t) / len(look)
    con.close()
    return write, read

def lmdb_times(lmdb, path, keys, val, look, bs):
    "The same in LMDB; sync=False: like SQLite's synchronous=NORMAL, a crash of the process loses nothing committed"
    env = lmdb.open(str(path), map_size=2**34, sync=False)
    t = time.perf_counter()
    for i in range(0, len(keys), bs):
        with env.begin(write=True) as tx:
            for k in keys[i:i+bs]: tx.put(k, val, overwrite=False)
    write = (time.perf_counter() - t) / (len(keys)/bs)
    t = time.perf_counter()
    for b in look:
        with env.begin() as tx: found = [tx.get(k) for k in b]
    read = (time.perf_counter() - t) / len(look)
    env.close()
    return write, read

def main(a):
    if a.lmdb: sys.path.insert(0, a.lmdb)
    try: import lmdb
    except ImportError: sys.exit('No lmdb package: `pip install --target DIR lmdb`, then pass --lmdb DIR')
    n, reps, bs = (2000, 20, 64) if a.quick else (20000, 300, 64)
    keys = item_keys([torch.arange(n)[:, None]])  # one 16-byte key per item, as the store makes them
    rng = random.Random(0)
    look = [rng.sample(keys, bs) for _ in range(reps)]
    rows = []
    with tempfile.TemporaryDirectory(dir=a.dir or Path(__file__).parent, prefix='store-bench-') as tmp:
        for size in SIZES:
            val = os.urandom(size)
            rows.append((size, *sqlite_times(Path(tmp)/f'kv-{size}.db', keys, val, look, bs),
                         *lmdb_times(lmdb, Path(tmp)/f'kv-{size}.lmdb', keys, val, look, bs)))
    print(f"## SQLite (as the store uses it) vs LMDB: {n:,} rows, batches of {bs} keys" + (' (--quick: numbers not meaningful)' if a.quick else ''))
    print(f"\nSQLite {sqlite3.sqlite_version}, lmdb {lmdb.__version__}, Python {platform.python_version()}, {platform.machine()}\n")
    print('| row bytes | insert + commit, SQLite ms | LMDB ms | lookup, SQLite ms | LMDB ms |\n|---:|---:|---:|---:|---:|')
    for size, ws, rs, wl, rl in rows: print(f"| {size} | {ws*1e3:.2f} | {wl*1e3:.2f} | {rs*1e3:.3f} | {rl*1e3:.3f} |")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--lmdb', default=None, help='a folder holding the lmdb package (pip install --target DIR lmdb)')
    p.add_argument('--quick', action='store_true', help='smoke run: fewer rows and lookups')
    p.add_argument('--dir', default=None, help='where the databases are written (default: a temporary folder in bench/, as store.py)')
    main(p.parse_args())
