"""Same figures after a change of structure: every task's pipeline run by this code and by a baseline checkout, compared.

Each task runs through `medmaas run TASK` (all four steps, seed 0) once with this code and once with the baseline
checkout, each with its own runs, registry and keys folders; then the chosen model and every figure its `metrics.json`
holds (cross-validated on the training split, and on the held-out test split, with their intervals) are compared.
"same" means equal to the last digit written; a float that differs is shown with both values.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/same_figures.py --baseline DIR [--quick] [--tasks T ...] [--write]

`--baseline DIR` is a checkout of the older commit (`git worktree add DIR COMMIT`). With `--write` the table goes to
`same_figures.md` (full runs) or `same_figures_quick.md` (`--quick`), or to `--out NAME`.md. Not a test: a full run of every task
takes about half an hour on two cores, per checkout.
"""
import json, math, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT/'benchmarks')]
from common import parser, machine, publish

def notebook_error(folder:Path)->str:
    "The first error an executed step notebook under `folder` holds: 'step: error: message' (empty when none)."
    for nb in sorted(folder.glob('*/*/*.ipynb')):
        for c in json.loads(nb.read_text()).get('cells', []):
            for o in c.get('outputs', []):
                if o.get('output_type') == 'error': return f"{nb.stem}: {o.get('ename')}: {str(o.get('evalue'))[:160]}"
    return ''

def run(code_dir:Path, work:Path, task:str, quick:bool)->tuple[dict|None, float, str]:
    "Run one task's pipeline with the code in `code_dir`; (its metrics.json or None, seconds, the error of a failed step)."
    env = {**os.environ, 'PYTHONPATH': str(code_dir), 'MEDMAAS_RUNS_DIR': str(work/'runs'), 'MEDMAAS_REGISTRY_DIR': str(work/'registry'),
           'MLFLOW_TRACKING_URI': '', 'MEDMAAS_KEYS_FILE': str(work/'keys.json'), 'MEDMAAS_AUDIT_LOG': str(work/'audit.jsonl'),
           'MEDMAAS_SIGNING_KEY_FILE': str(work/'signing.key'), 'MEDMAAS_PIPELINES_DIR': str(code_dir/'nbs'/'pipelines')}
    cmd = [sys.executable, '-c', 'import sys; from medmaas_nb.pipeline import main; sys.exit(main())', 'run', task, '--no-track']
    t0 = time.perf_counter()
    p = subprocess.run(cmd + (['--quick'] if quick else []), cwd=code_dir, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    found = sorted((work/'runs'/task).glob('*/metrics.json'))
    err = '' if not p.returncode else (notebook_error(work/'runs') or (p.stderr.strip().splitlines() or ['failed'])[-1][:200])
    # the figures are written by the evaluation step: a later step's failure (serving) is reported beside them
    return (json.loads(found[-1].read_text()) if found else None), secs, err

def figures(m:dict)->dict:
    "{'test.roc_auc.value': 0.93, ...}: every number under the metrics' `cv` and `test`, and the chosen model."
    out = {'chosen': m.get('chosen')}
    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items(): walk(f'{prefix}.{k}', x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool): out[prefix] = v
    for part in ('cv', 'test'): walk(part, m.get(part, {}))
    return out

def compare(a:dict, b:dict)->tuple[int, list]:
    "How many figures agree, and the ones that do not (name, this code, baseline)."
    fa, fb = figures(a), figures(b)
    nan = lambda v: isinstance(v, float) and math.isnan(v)  # an undefined figure (e.g. the sd of one fold) equals itself
    diff = [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k) and not (nan(fa.get(k)) and nan(fb.get(k)))]
    return len(set(fa) | set(fb)) - len(diff), diff

def main():
    ap = parser(__file__, __doc__)
    ap.add_argument('--baseline', type=Path, required=True); ap.add_argument('--quick', action='store_true')
    ap.add_argument('--tasks', nargs='*')
    ap.add_argument('--out', help="the table's file name without .md (default: same_figures, or same_figures_quick with --quick)")
    a = ap.parse_args()
    from medmaas_nb.tasks import all_tasks
    from medmaas_nb.data import availability
    tasks = a.tasks or [t.name for t in all_tasks().values() if availability(t.dataset) != 'missing']
    rows = ['| task | chosen (this code / baseline) | figures compared | same | differing (this code vs baseline) | seconds (this code / baseline) |',
            '|---|---|---|---|---|---|']
    with tempfile.TemporaryDirectory(prefix='same-figures-') as d:
        for t in tasks:
            (mine, s1, e1), (base, s2, e2) = run(ROOT, Path(d)/'this'/t, t, a.quick), run(a.baseline.resolve(), Path(d)/'base'/t, t, a.quick)
            if mine is None or base is None:
                rows.append(f"| {t} | - | - | - | failed: {e1 or 'ok'} / {e2 or 'ok'} | {s1:.0f} / {s2:.0f} |"); continue
            same, diff = compare(mine, base)
            shown = '; '.join(f'{k} {x} vs {y}' for k, x, y in diff[:4]) + (f' and {len(diff) - 4} more' if len(diff) > 4 else '')
            if e1 or e2: shown = (shown if diff else '-') + f" (after the figures, a step failed: {e1 or 'ok'} / {e2 or 'ok'})"
            rows.append(f"| {t} | {mine['chosen']} / {base['chosen']} | {same + len(diff)} | {same} | {shown or '-'} | {s1:.0f} / {s2:.0f} |")
            print(rows[-1], flush=True)
    kind = 'quick runs (small slices, few folds)' if a.quick else 'full runs'
    which = f'the {len(tasks)} tasks given with --tasks' if a.tasks else 'every task whose data is available'
    publish(__file__, f'Same figures: {kind} before and after', f'{machine()} Seed 0, {kind}, {which}.',
            '\n'.join(rows), a.write, a.baseline, ', given with `--baseline DIR` (`git worktree add DIR COMMIT`)',
            stem=a.out or ('same_figures_quick' if a.quick else None))

if __name__ == '__main__':
    main()
