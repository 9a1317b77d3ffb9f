"""Start-up to ready of `medmaas serve` for a tabular model, with MLflow as the registry, against an older checkout.

A diabetes-progression model (quick fit, RidgeCV) is registered by each checkout in its own registry folder; then
`medmaas serve --models diabetes-progression` is started again and again, alternating between the checkouts, and timed
from process start until `/v2/health/ready` answers 200. For this code registration keeps the version's verified local
copy, so every start reads the embedded store directly and loads from the copy (a service on a machine that has no copy
fetches it once, through MLflow, on its first start: not measured here).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/serve_startup.py [--baseline DIR] [--repeats 5] [--write]

Not a test: figures depend on the machine and its load. Goal (issue: MLflow as the registry): 3 s or less.
"""
import os, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT/'tests'), str(ROOT/'benchmarks')]
from common import parser, machine, publish
from conftest import free_port  # (it also points the signing key at a temporary file, for registration and serving alike)

TASK = 'diabetes-progression'
REGISTER = '''
import sys; from pathlib import Path
from medmaas_nb.tasks import get_task
from medmaas_nb.registry import Registry, save_model, make_card
from medmaas_nb.clinical import diabetes_candidates
t = get_task(sys.argv[1]); ds = t.load(quick=True); X, y = ds['train']
work = Path(sys.argv[2]); save_model(diabetes_candidates(quick=True)['ridge'].fit(X, y), work/'model')
Registry().register(t.name, work/'model', make_card(t, ds, {'quick': True}, {}, 'ridge'), aliases=['production'])
'''

def env_for(code_dir:Path, work:Path)->dict:
    return {**os.environ, 'PYTHONPATH': str(code_dir), 'MEDMAAS_REGISTRY_DIR': str(work/'registry'), 'MLFLOW_TRACKING_URI': '',
            'MEDMAAS_KEYS_FILE': str(work/'keys.json'), 'MEDMAAS_AUDIT_LOG': str(work/'audit.jsonl')}

def start_to_ready(code_dir:Path, work:Path)->float:
    "Seconds from `medmaas serve` starting until its readiness probe answers 200."
    import httpx
    port = free_port(); t0 = time.perf_counter()
    p = subprocess.Popen([str(Path(sys.executable).parent/'medmaas'), 'serve', '--host', '127.0.0.1', '--port', str(port), '--models', TASK],
                         env=env_for(code_dir, work), cwd=code_dir, stdout=subprocess.DEVNULL, stderr=open(work/'serve.log', 'ab'))
    try:
        while p.poll() is None:
            try:
                if httpx.get(f'http://127.0.0.1:{port}/v2/health/ready', timeout=1).status_code == 200: return time.perf_counter() - t0
            except httpx.TransportError: pass
            time.sleep(0.02)
        raise SystemExit(f'{code_dir}: the service exited ({p.returncode}); see {work/"serve.log"}')
    finally: p.terminate(); p.wait(20)

def main():
    ap = parser(__file__, __doc__); ap.add_argument('--baseline', type=Path); ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    variants = [('this code', ROOT)] + ([('baseline', a.baseline.resolve())] if a.baseline else [])
    tmp = Path(tempfile.mkdtemp(prefix='serve-startup-')); works = {}
    for label, d in variants:
        works[label] = w = tmp/label.replace(' ', '-'); w.mkdir()
        subprocess.run([sys.executable, '-c', REGISTER, TASK, str(w)], env=env_for(d, w), cwd=d, check=True, capture_output=True)
    times = {label: [] for label, _ in variants}
    for r in range(a.repeats):
        for label, d in variants: times[label].append(start_to_ready(d, works[label])); print(label, round(times[label][-1], 2), flush=True)
    rows = ''.join(f'| {label} | {t[0]:.2f} | {np.median(t[1:]) if len(t) > 1 else float("nan"):.2f} | {min(t):.2f} | {max(t):.2f} | {len(t)} |\n'
                   for label, t in times.items())
    table = '| code | first start (s) | median of later starts (s) | fastest (s) | slowest (s) | starts |\n|---|---|---|---|---|---|\n' + rows
    intro = (f'{machine()} Process start to `/v2/health/ready` = 200 for a RidgeCV '
             'diabetes-progression model, starts alternating between the checkouts. Goal: 3 s or less.')
    publish(__file__, 'Service start-up with MLflow as the registry', intro, table, a.write, a.baseline,
            ' (folder registry), given with `--baseline DIR` (`git worktree add DIR COMMIT`)')

if __name__ == '__main__': main()
