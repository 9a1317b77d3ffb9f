"""Run every notebook's tests like `nbdev_test`, but each notebook in a fresh Python process.

`nbdev_test --n_workers N` reuses its worker processes, so module state from one notebook (e.g. tasks that a library
notebook registered from its own cells, whose classes live in `__main__`) leaks into the next notebook that worker runs,
and the result depends on scheduling. A user runs each notebook in its own kernel; so does this.
Usage: python tools/test_notebooks.py [--n_workers 2] [--path nbs/x.ipynb ...]
"""
import argparse, os, sys, time
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from nbdev.config import get_config
from nbdev.doclinks import nbglob
from nbdev.test import test_nb, _keep_file
from fastcore.xtras import working_directory

def _run(f):
    cfg = get_config()
    with working_directory(cfg.nbs_path):
        t0 = time.perf_counter()
        ok, _ = test_nb(f, skip_flags=cfg.tst_flags.split(), basepath=cfg.config_path)
        return ok, time.perf_counter() - t0

def _share_cores(n:int):
    "Give each parallel worker its share of the cores for BLAS and OpenMP: oversubscribed, a 1 s fit took 28 s here."
    import os
    for v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'): os.environ[v] = str(n)  # libraries loaded later
    from threadpoolctl import threadpool_limits
    threadpool_limits(n)  # numpy's BLAS, already loaded by nbdev

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--n_workers', type=int, default=2); ap.add_argument('--path', nargs='*')
    a = ap.parse_args()
    files = [f.absolute() for f in sorted(nbglob(None, as_path=True)) if _keep_file(f, '.notest')] if not a.path else \
            [Path(p).absolute() for p in a.path]
    share = max(1, (os.cpu_count() or 1) // a.n_workers)
    with ProcessPoolExecutor(a.n_workers, max_tasks_per_child=1, initializer=_share_cores, initargs=(share,)) as ex:
        results = list(ex.map(_run, files))
    for f, (ok, t) in sorted(zip(files, results), key=lambda o: -o[1][1]): print(f"{'ok  ' if ok else 'FAIL'} {t:6.0f} s  {f.relative_to(get_config().nbs_path)}")
    failed = [f.name for f, (ok, _) in zip(files, results) if not ok]
    if failed: sys.exit(f'Notebook tests failed: {", ".join(failed)}')
    print(f'Success: {len(files)} notebooks, each in its own process.')

if __name__ == '__main__': main()
