"""The results table: each task's headline figure from its latest full run, beside the published anchors.

Reads `runs/<task>/<run_id>/metrics.json` (per task the newest run that was not `--quick`, with seed 0 where there is one) and
makes one Markdown table: the task's headline metric (its primary metric unless the task names another) on the held-out test split and in cross-validation on the training split, both with their 95 %
intervals, and the anchors measured with the same metric. `make docs` runs it: the table goes into README.md between the
`<!-- results:begin -->` and `<!-- results:end -->` markers (a task without a run under `runs/` keeps its row there) and onto the docs site's Results page, so no figure there is
copied by hand.

    python tools/results.py [--runs DIR] [--readme] [--page FILE]

Without full runs it changes nothing and says so.
"""
import argparse, json, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = '<!-- results:begin -->', '<!-- results:end -->'
NAMES = {'roc_auc': 'AUC', 'r2': 'R²', 'c_index': "Harrell's C", 'accuracy': 'accuracy', 'mrr': 'MRR', 'roc_auc_ovr': 'AUC (one vs rest)',
         'f1_macro': 'macro-F1', 'balanced_accuracy': 'balanced accuracy', 'rmse': 'RMSE', 'map50': 'mAP@0.5',
         'sqrt_pehe': 'sqrt(PEHE)', 'c_for_benefit': 'C-for-benefit'}

def latest_full_runs(runs_dir:Path)->dict:
    "{task: (run folder, metrics)} of each task's newest run that was not quick, with seed 0 where there is one (run ids sort by time)."
    out = {}
    for task in sorted(p for p in Path(runs_dir).glob('*') if p.is_dir()):
        full = []
        for run in sorted((r for r in task.iterdir() if (r/'metrics.json').is_file()), reverse=True):
            try: m = json.loads((run/'metrics.json').read_text())
            except (OSError, ValueError): continue  # a run being written, or a damaged file: not a result
            if not m.get('params', {}).get('quick', False): full.append((run, m))
        if full: out[task.name] = next((rm for rm in full if rm[1].get('params', {}).get('seed', 0) == 0), full[0])
    return out

def figure(f:dict|None)->str:
    "0.921 [0.880, 0.955], or '-' when the run has no such figure."
    if not isinstance(f, dict) or f.get('value') is None: return '-'
    lo, hi = f.get('ci_low'), f.get('ci_high')
    ok = lambda v: isinstance(v, (int, float)) and v == v
    return f"{f['value']:.3f}" + (f' [{lo:.3f}, {hi:.3f}]' if ok(lo) and ok(hi) else '')

def row(run:Path, m:dict, primary:str)->str:
    "One task's row: task, metric, test, CV, chosen model, anchors of the same metric, run."
    by_how = {}  # anchors measured the same way share one note of how
    for a in m.get('anchors', []):
        if a.get('metric') == primary: by_how.setdefault(a['how'], []).append(f"{a['model']} {a['value']:.3f}")
    anchors = '; '.join(f"{', '.join(v)} ({how})" for how, v in by_how.items()) or '-'
    return (f"| `{m['task']}` | {NAMES.get(primary, primary)} | {figure(m.get('test', {}).get(primary))} | {figure(m.get('cv', {}).get(primary))} "
            f"| {m.get('chosen', '-')} | {anchors} | {run.name} |")

def results_table(runs:dict, primary_of)->str:
    "The Markdown table for `runs` ({task: (folder, metrics)}); `primary_of(task)` names the headline metric."
    head = ['| task | metric | held-out test [95 % CI] | CV on the training split [95 % CI] | chosen model | anchors (same metric; how they were measured) | run |',
            '|---|---|---|---|---|---|---|']
    return '\n'.join(head + [row(r, m, primary_of(t)) for t, (r, m) in sorted(runs.items())])

def replace_between_markers(text:str, table:str, where:str='README.md')->str:
    "`text` with everything between the results markers replaced by `table`."
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f'{where}: expected one {BEGIN} line followed by one {END} line around the results table')
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:a] + '\n' + table + '\n' + text[b:]

def table_rows(text:str)->dict:
    "{task: row} of the table between the markers of `text` (none if it has no table there)."
    if text.count(BEGIN) != 1 or text.count(END) != 1: return {}
    inner = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    return {l.split('`')[1]: l for l in inner.splitlines() if l.startswith('| `')}

def merged_table(table:str, old_text:str)->str:
    "`table` plus the rows of `old_text`'s table for tasks it has no run of: a machine with some runs never drops the others' results."
    new = table_rows(f'{BEGIN}\n{table}\n{END}'); old = table_rows(old_text)
    head = [l for l in table.splitlines() if not l.startswith('| `')]
    return '\n'.join(head + [r for t, r in sorted({**old, **new}.items())])

def write_atomic(path:Path, text:str):
    "Write then rename: a reader never sees half a file."
    tmp = path.with_name(f'.{path.name}.tmp'); tmp.write_text(text, encoding='utf-8'); os.replace(tmp, path)

PAGE_HEAD = ('# Results\n\nEach task\'s headline figure from its latest full run (`medmaas run TASK`, seed 0), beside the published '
             'anchors measured with the same metric; where an anchor\'s protocol differs from ours, its column says how it was measured. '
             "Generated by `tools/results.py` from the runs' `metrics.json`; each task's evaluation report holds every figure.\n\n")

def table_for(runs_dir:Path)->str|None:
    "The results table of the full runs under `runs_dir`, or None when there are none."
    runs = latest_full_runs(runs_dir)
    if not runs: return None
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    from medmaas_nb.tasks import all_tasks
    tasks = all_tasks()
    return results_table(runs, lambda t: (tasks[t].headline or tasks[t].primary_metric) if t in tasks else 'roc_auc')

def write_page(path:Path, runs_dir:Path)->bool:
    "The docs site's Results page; without full runs it says how to make them. True when it holds a table."
    table = table_for(runs_dir)
    body = table if table else f'No full runs were found under `{runs_dir}` when this site was built: `make run`, then `make docs`.'
    path.parent.mkdir(parents=True, exist_ok=True); write_atomic(path, PAGE_HEAD + body + '\n'); return table is not None

def main(argv=None)->int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=Path, default=Path(os.environ.get('MEDMAAS_RUNS_DIR') or ROOT/'runs'), help='the runs folder')
    ap.add_argument('--readme', action='store_true', help='write the table into README.md between the markers')
    ap.add_argument('--page', type=Path, help="write the docs site's Results page (Markdown) here")
    a = ap.parse_args(argv)
    if a.page: write_page(a.page, a.runs)
    table = table_for(a.runs)
    if table is None:
        print(f'results: no full runs under {a.runs} (quick runs do not count); README.md unchanged. `make run` makes them.', file=sys.stderr)
        return 0
    print(table)
    if a.readme:
        p = ROOT/'README.md'; old = p.read_text(encoding='utf-8')
        write_atomic(p, replace_between_markers(old, merged_table(table, old)))  # tasks without a run here keep their row
    return 0

if __name__ == '__main__': sys.exit(main())
