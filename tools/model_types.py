"""List the types every task's scikit-learn models name in their skops files: the source of `registry.MODEL_TYPES`.

For each task with the sklearn runtime: a quick `fit_task` (the model a quick run registers, wrappers included), then every
candidate of a full run (`task.candidates(quick=False)`) fitted on the quick training split, as the task's training code
builds them. Prints, per task, the types outside `MODEL_TYPES` (none when the allowlist covers the task), and the union.
With --keras: the classes the `.keras` files of the Keras tasks name (`registry.KERAS_TYPES`), from building each network
the way the task code does (both image architectures, one network or checkpoints per seed, with test-time views; the
trajectory GRU, compiled), untrained: training changes weights, not classes.
Usage: MEDMAAS_DATA_DIR=... python tools/model_types.py [TASK ...] [--json out.json] [--keras]
"""
import argparse, json, sys, time
from sklearn.base import clone
from medmaas_nb.runtimes import MODEL_TYPES, KERAS_TYPES, skops_types, keras_types
from medmaas_nb.tasks import all_tasks, fit_task

def types_of(model)->set:
    import skops.io as sio
    return skops_types(sio.dumps(model))

def task_types(t)->dict:
    "{model name: sorted types} for a task's quick fit and each of its full-run candidates (unfitted where fitting failed)."
    out = {}; ds = t.load(quick=True, seed=0); X, y = ds['train']
    t0 = time.perf_counter(); r = fit_task(t, ds, quick=True, seed=0)
    out[f'quick fit ({r.chosen})'] = sorted(types_of(r.model)); print(f'  quick fit {r.chosen}: {time.perf_counter() - t0:.1f}s', file=sys.stderr)
    if t.candidates is None: return out
    for kw in ({'ds': ds, 'encoder': True}, {'encoder': True}, {}):  # `encoder`: pubmedqa's optional sentence-encoder candidates
        try: cands = t.candidates(quick=False, seed=0, **kw); break
        except TypeError: continue
    for name, c in cands.items():
        t0 = time.perf_counter()
        try:
            m = clone(c).fit(X, y)
            if t.name == 'breast-cancer-diagnosis':  # `train_wdbc` wraps the chosen candidate
                from sklearn.model_selection import FixedThresholdClassifier
                m = FixedThresholdClassifier(m, threshold=0.5, response_method='predict_proba').fit(X, y)
            out[name] = sorted(types_of(m))
        except Exception as e:  # e.g. the sentence encoder is not installed: the estimators' own types, unfitted
            print(f'  {name}: not fitted ({type(e).__name__}: {str(e)[:200]}); listing the unfitted estimator', file=sys.stderr)
            out[f'{name} (unfitted)'] = sorted(types_of(clone(c)))
        print(f'  {name}: {time.perf_counter() - t0:.1f}s', file=sys.stderr)
    return out

def keras_model_types()->dict:
    "{network: sorted classes its .keras file names} for the networks of the Keras tasks."
    import tempfile
    from pathlib import Path
    from medmaas_nb.imaging_networks import ARCHITECTURES, TTA_VIEWS, build_member, build_served, member_prefix
    from medmaas_nb.clinical_trajectory import build_gru
    nets = {'pbc-trajectory gru': build_gru()}
    for arch in ARCHITECTURES:
        for tta in TTA_VIEWS:
            nets[f'{arch} one seed, tta {tta}'] = build_served(arch, [build_member(arch, member_prefix(0, 0, 1))], tta=tta)
            nets[f'{arch} 2 seeds x 2 checkpoints, tta {tta}'] = build_served(
                arch, [[build_member(arch, member_prefix(i, j, 2)) for j in range(2)] for i in range(2)], tta=tta)
    out, d = {}, Path(tempfile.mkdtemp())
    for name, net in nets.items():
        p = d/'model.keras'; net.save(p); out[name] = sorted(keras_types(p))
    return out

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('tasks', nargs='*'); ap.add_argument('--json'); ap.add_argument('--keras', action='store_true')
    a = ap.parse_args()
    if a.keras:
        report = keras_model_types(); union = set().union(*map(set, report.values()))
        for n, v in report.items(): print(f'{n}: outside KERAS_TYPES: {sorted(set(v) - KERAS_TYPES) or "none"}')
        if a.json: open(a.json, 'w').write(json.dumps({'networks': report, 'union': sorted(union)}, indent=1))
        print(json.dumps(sorted(union))); return 1 if union - KERAS_TYPES else 0
    tasks = {n: t for n, t in all_tasks().items() if t.runtime == 'sklearn' and (not a.tasks or n in a.tasks)}
    report, union = {}, set()
    for n, t in tasks.items():
        print(n, file=sys.stderr); report[n] = task_types(t)
        for v in report[n].values(): union.update(v)
        missing = sorted({x for v in report[n].values() for x in v} - MODEL_TYPES)
        unfitted = [k for k in report[n] if k.endswith('(unfitted)')]
        print(f'{n}: {len(report[n])} models, outside MODEL_TYPES: {missing or "none"}' + (f'; not fitted: {unfitted}' if unfitted else ''))
    if a.json: open(a.json, 'w').write(json.dumps({'tasks': report, 'union': sorted(union)}, indent=1))
    print(json.dumps(sorted(union)))
    return 1 if union - MODEL_TYPES else 0

if __name__ == '__main__': sys.exit(main())
