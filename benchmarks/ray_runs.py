"""`medmaas run --all` with and without `--ray`, side by side in one sitting: wall time, and every task's figures compared.

Both runs use this code, seed 0 and their own runs, registry and keys folders; the run without Ray goes first. The
wall time is the whole command (Ray's start included); a task's seconds are its four steps. "same" means every figure in
the task's `metrics.json` (cross-validated and test, with intervals) and the chosen model equal to the last digit.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/ray_runs.py [--quick] [--tasks T ...] [--write]

With `--write` the table goes to `ray_runs.md` (full runs) or `ray_runs_quick.md` (`--quick`). Not a test: the full
runs of every task take about half an hour on two cores, per way.
"""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT/'benchmarks')]
from common import parser, machine, publish
from same_figures import compare

def run_all(work:Path, tasks:list, quick:bool, ray:bool)->tuple[float, dict, str]:
    "Run the tasks with `medmaas run`; (wall seconds, {task: (metrics or None, step seconds)}, the command's last lines)."
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'MEDMAAS_RUNS_DIR': str(work/'runs'), 'MEDMAAS_REGISTRY_DIR': str(work/'registry'),
           'MLFLOW_TRACKING_URI': '', 'MEDMAAS_KEYS_FILE': str(work/'keys.json'), 'MEDMAAS_AUDIT_LOG': str(work/'audit.jsonl'),
           'MEDMAAS_SIGNING_KEY_FILE': str(work/'signing.key')}
    cmd = [sys.executable, '-c', 'import sys; from medmaas_nb.pipeline import main; sys.exit(main())', 'run', *tasks, '--no-track']
    t0 = time.perf_counter()
    p = subprocess.run(cmd + ['--quick'] * quick + ['--ray'] * ray, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = {}
    for t in tasks:
        found = sorted((work/'runs'/t).glob('*/metrics.json'))
        timings = found[-1].parent/'timings.json' if found else None
        out[t] = (json.loads(found[-1].read_text()) if found else None,
                  sum(json.loads(timings.read_text()).values()) if timings and timings.exists() else float('nan'))
    return wall, out, '\n'.join((p.stdout + p.stderr).strip().splitlines()[-3:])

def main():
    ap = parser(__file__, __doc__)
    ap.add_argument('--quick', action='store_true'); ap.add_argument('--tasks', nargs='*')
    a = ap.parse_args()
    from medmaas_nb.tasks import all_tasks, get_task
    from medmaas_nb.data import availability
    tasks = a.tasks or [t.name for t in all_tasks().values() if availability(t.dataset) != 'missing']
    with tempfile.TemporaryDirectory(prefix='ray-runs-') as d:
        w_seq, seq, tail_seq = run_all(Path(d)/'plain', tasks, a.quick, ray=False)
        print(f'without Ray: {w_seq:.0f} s\n{tail_seq}', flush=True)
        w_ray, on_ray, tail_ray = run_all(Path(d)/'ray', tasks, a.quick, ray=True)
        print(f'with Ray: {w_ray:.0f} s\n{tail_ray}', flush=True)
    rows = ['| task | CPUs declared | seconds without Ray | seconds on Ray | figures compared | same | differing (without vs with Ray) |',
            '|---|---|---|---|---|---|---|']
    n_same = 0
    for t in tasks:
        (m1, s1), (m2, s2) = seq[t], on_ray[t]
        need = get_task(t).cpu_need(get_task(t).parse_params({'quick': a.quick}))
        if m1 is None or m2 is None:
            rows.append(f"| {t} | {need} | {s1:.0f} | {s2:.0f} | - | - | failed: {'ok' if m1 else 'no figures'} / {'ok' if m2 else 'no figures'} |"); continue
        same, diff = compare(m1, m2); n_same += not diff
        shown = '; '.join(f'{k} {x} vs {y}' for k, x, y in diff[:3]) + (f' and {len(diff) - 3} more' if len(diff) > 3 else '')
        rows.append(f'| {t} | {need} | {s1:.0f} | {s2:.0f} | {same + len(diff)} | {same} | {shown or "-"} |')
    rows.append(f'| **whole command (wall)** | | **{w_seq:.0f}** | **{w_ray:.0f}** (x{w_ray / w_seq:.2f}) | | {n_same}/{len(tasks)} tasks identical | |')
    need = {t: get_task(t).cpu_need(get_task(t).parse_params({'quick': a.quick})) for t in tasks}
    one = [t for t in tasks if need[t] == 1]; s1, s2 = (sum(d[t][1] for t in one) for d in (seq, on_ray))
    cpu_s = sum(need[t] * on_ray[t][1] for t in tasks)
    rows += ['', f'The tasks that declare one CPU took {s2 / s1:.2f}x their time on Ray ({s1:.0f} s in all without Ray, {s2:.0f} s on Ray): '
             'two of them ran at once on the same cores. A run without Ray already keeps both cores busy much of the time '
             "(TensorFlow's and BLAS's thread pools, the next step's kernel warming up while a step runs, reports rendered in the "
             'background; inferred from these times, CPU use was not recorded), so on two cores Ray has little to give. It pays off '
             'when it brings cores: the runs spread over the nodes of a cluster, and with enough of them the wall time approaches '
             f'the longest run. Declared CPUs x seconds on Ray: {cpu_s:.0f} CPU-seconds for the {len(tasks)} runs '
             f'({cpu_s / len(tasks):.0f} per run), the figure `docs/scaling.md` extrapolates from. A fresh runs folder holds no '
             'earlier times, so the tasks were started in the order of the list.']
    kind = 'quick runs (small slices, few folds)' if a.quick else 'full runs'
    publish(__file__, f'`medmaas run --all` with and without Ray ({kind})',
            f'{machine()} Seed 0, {kind}, {len(tasks)} tasks, one after the other without Ray, then as Ray tasks on a local Ray '
            f'(each task declares its CPUs; the longest known runs start first). Wall time with Ray: x{w_ray / w_seq:.2f} of the time without.',
            '\n'.join(rows), a.write, stem='ray_runs_quick' if a.quick else None)

if __name__ == '__main__':
    main()
