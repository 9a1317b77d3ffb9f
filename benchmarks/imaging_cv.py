"""Choose an imaging task's network by cross-validation on the training data, never the test split.

BreastMNIST's validation split has 78 images (21 malignant): its AUC moves by about 0.03 between seeds, too little to choose
between candidates; PneumoniaMNIST's validation AUC sits near its ceiling (0.996-0.997 for both candidates). This script
pools a task's official train and validation splits, draws stratified folds, trains each candidate configuration with one or
more seeds per fold, and records per fit the out-of-fold AUC and accuracy (threshold 0.5) of one network and of the average
logit of the first k networks. Rows go to a JSON-lines file as they are produced, so an interrupted run keeps what it
measured; `--table ... --write` turns them into benchmarks/imaging_cv.md (one section per task).

    python benchmarks/imaging_cv.py --configs resnet16 resnet32 --folds 5 --members 3 --out /tmp/breast_cv.jsonl
    python benchmarks/imaging_cv.py --task pneumonia-xray --configs pneumonia-baseline pneumonia-resnet16 --members 1 --out /tmp/pneu_cv.jsonl
    python benchmarks/imaging_cv.py --table /tmp/breast_cv.jsonl /tmp/pneu_cv.jsonl --write
"""
import argparse, json, time
from pathlib import Path
import numpy as np

# Each configuration: the architecture and what it changes in the task's own defaults (its `Param`s), so that a candidate
# trains exactly as a full run would train it except for the overrides.
CONFIGS = {
    'resnet16': ('small_resnet', {'width': 16}),          # breast-ultrasound's stronger network before the CV
    'resnet32': ('small_resnet', {'width': 32}),          # twice the filters in every block
    'resnet48': ('small_resnet', {'width': 48}),
    'resnet32-mixup': ('small_resnet', {'width': 32, 'mixup': 0.3}),  # mixup, Beta(0.3, 0.3)
    # pneumonia-xray's two candidates as a full run trains them. The baseline stops early on the held-out fold (as it stops
    # on the validation split in a full run), which flatters it; the ResNet runs its whole schedule.
    'pneumonia-baseline': ('baseline_cnn', {}),
    'pneumonia-resnet16': ('small_resnet', {}),
}

def member_kwargs(task, name:str)->tuple[str, dict]:
    "(architecture, `train_member` keyword arguments) of configuration `name`: the task's defaults, then the overrides."
    from medmaas_nb.imaging_networks import member_params
    arch, overrides = CONFIGS[name]
    kw = member_params(task.task_params(task.parse_params({})))
    unknown = set(overrides) - set(kw)
    if unknown: raise ValueError(f'{name}: train_member takes no {sorted(unknown)}')
    return arch, {**kw, **overrides}

def _views(name:str):
    "Test-time augmentation views as the served model computes them (`medmaas_nb.imaging_networks.TTA_VIEWS`, `image_view`)."
    from medmaas_nb.imaging_networks import TTA_VIEWS, image_view
    return lambda X: [image_view(X, v) for v in TTA_VIEWS[name]]

# Test-time augmentation views, scored on the same trained networks: the logit averaged over the views.
TTA_VIEWS = {name: _views(name) for name in ('flip', 'flipshift')}

def run(configs, folds, members, out, seed=0, task='breast-ultrasound', tta=()):
    from sklearn.model_selection import StratifiedKFold
    from sklearn.metrics import roc_auc_score
    from medmaas_nb.tasks import get_task
    from medmaas_nb.imaging_networks import train_member, image_scores, _sigmoid
    T = get_task(task); ds = T.load(quick=False, seed=0, **T.task_params(T.parse_params({})))  # the task's data as a full run loads it
    (Xtr, ytr), (Xva, yva) = ds['train'], ds['val']
    X, y = np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva]).astype(int)
    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with open(out, 'a') as f:
        for k, (tr, te) in enumerate(skf.split(X, y)):
            for name in configs:
                arch, cfg = member_kwargs(T, name); logits, tlogits = [], {v: [] for v in tta}
                for m in range(members):
                    t0 = time.perf_counter()
                    net, hist, _ = train_member(arch, X[tr], y[tr], X[te], y[te], seed=1000 * k + m, prefix=f's{m}_', **cfg)
                    z = image_scores(net, X[te]); logits.append(z)
                    zbar = np.mean(logits, axis=0); p1, pk = _sigmoid(z), _sigmoid(zbar)
                    row = {'task': task, 'config': name, 'fold': k, 'member': m, 'n_test': int(len(te)), 'fit_s': round(time.perf_counter() - t0, 1),
                           'auc_member': roc_auc_score(y[te], p1), 'acc_member': float(((p1 >= 0.5) == y[te]).mean()),
                           'auc_ensemble': roc_auc_score(y[te], pk), 'acc_ensemble': float(((pk >= 0.5) == y[te]).mean())}
                    for v in tta:  # the same network, its logit averaged over the views of each held-out image
                        zv = np.mean([image_scores(net, V) for V in TTA_VIEWS[v](X[te])], axis=0); tlogits[v].append(zv)
                        q1, qk = _sigmoid(zv), _sigmoid(np.mean(tlogits[v], axis=0))
                        row.update({f'auc_member_{v}': roc_auc_score(y[te], q1), f'acc_member_{v}': float(((q1 >= 0.5) == y[te]).mean()),
                                    f'auc_ensemble_{v}': roc_auc_score(y[te], qk), f'acc_ensemble_{v}': float(((qk >= 0.5) == y[te]).mean())})
                    f.write(json.dumps(row) + '\n'); f.flush(); print(row, flush=True)

HEADER = '''# Imaging: choosing the network by cross-validation

Written by `benchmarks/imaging_cv.py --table ... --write`. The task's official train and validation splits pooled, 5
stratified folds (seed 0); each configuration trains one or more networks per fold (seeds 1000 fold + member, the same for
every configuration). Out-of-fold AUC and accuracy at threshold 0.5, averaged over folds; "avg of k": the mean logit of the
first k networks of a fold; "same folds and seed": the difference in AUC to the task's first configuration, network 0 of
each fold. The test split is never touched. Fit times are wall seconds on the 2-core machine, partly while other jobs ran. A
configuration with fewer folds was stopped early: compare it only through the same-folds column.
'''

TTA_HEADER = '''# Imaging: test-time augmentation, measured by cross-validation

Written by `benchmarks/imaging_cv.py --table benchmarks/results/imaging_tta_breast.jsonl --write --md benchmarks/imaging_tta.md`
from the rows in `benchmarks/results/`. Folds, seeds and networks as in `imaging_cv.md` (the task's official train and
validation splits pooled, 5 stratified folds, seed 0, networks seeded 1000 fold + member). Each trained network is scored on
its held-out fold twice: on the images as they are, and with its logit averaged over views of each image. `flip`: the
image and its left-right mirror (2 views). `flipshift`: each of those and its four 1-pixel shifts with reflected edges (10
views), the shifts the 'crop' augmentation trains with. "vs none, same networks": the AUC difference of the same networks
(the average of all of a fold's networks where there are several) with and without the views. Accuracy at threshold 0.5.
The test split is never touched.
'''

NOTES = {'breast-ultrasound': 'BreastMNIST, 624 images pooled. Every ResNet runs its whole 60-epoch schedule and serves the average of its last 10 epochs\' weights.',
         'pneumonia-xray': 'PneumoniaMNIST as a full run loads it (the supplement\'s extra normal training images included). The baseline CNN stops '
                           'early on the held-out fold, as it stops on the validation split in a full run: that flatters it. The ResNet runs its '
                           'whole 15-epoch schedule and serves the average of its last 5 epochs\' weights.'}

def table(paths)->dict:
    "{task: DataFrame}, one row per configuration, from JSON-lines files of `run`."
    import pandas as pd
    d = pd.concat([pd.read_json(p, lines=True) for p in paths])
    d['task'] = d['task'].fillna('breast-ultrasound') if 'task' in d else 'breast-ultrasound'  # the first rows carried no task
    out = {}
    for task, dt in d.groupby('task', sort=False):
        first = dt.config.iloc[0]; ref = dt[(dt.config == first) & (dt.member == 0)].set_index('fold').auc_member
        rows = []
        for name, g in dt.groupby('config', sort=False):
            line = {'config': name, 'folds': g.fold.nunique(), 'fit s (mean)': round(g.fit_s.mean())}
            g0 = g[g.member == 0].set_index('fold').auc_member; both = g0.index.intersection(ref.index)
            line[f'AUC vs {first}, same folds and seed'] = f"{(g0[both] - ref[both]).mean():+.3f} ({(g0[both] > ref[both]).sum()}/{len(both)} folds ahead)" if len(both) else ''
            sd = f" +- {g.groupby('member').auc_member.mean().std(ddof=1):.3f} (sd over members)" if g.member.nunique() > 1 else ''
            line['AUC one member'] = f"{g.auc_member.mean():.3f}{sd}"
            line['ACC one member'] = f"{g.acc_member.mean():.3f}"
            for k in sorted(g.member.unique()):
                e = g[g.member == k]
                if k and e.fold.nunique() == g.fold.nunique():
                    line[f'AUC avg of {k + 1}'] = f"{e.auc_ensemble.mean():.3f}"; line[f'ACC avg of {k + 1}'] = f"{e.acc_ensemble.mean():.3f}"
            for v in [c[len('auc_member_'):] for c in g.columns if c.startswith('auc_member_') and g[c].notna().all()]:
                # test-time augmentation: the same networks scored on the views, beside themselves without
                last = g[g.member == g.member.max()]; col = 'ensemble' if g.member.max() else 'member'
                gain = last[f'auc_{col}_{v}'] - last[f'auc_{col}']; k = g.member.max() + 1
                line[f'TTA {v}: AUC one member'] = f"{g[f'auc_member_{v}'].mean():.3f}"
                line[f'TTA {v}: ACC one member'] = f"{g[f'acc_member_{v}'].mean():.3f}"
                if k > 1: line[f'TTA {v}: AUC avg of {k}'] = f"{last[f'auc_ensemble_{v}'].mean():.3f}"; line[f'TTA {v}: ACC avg of {k}'] = f"{last[f'acc_ensemble_{v}'].mean():.3f}"
                line[f'TTA {v} vs none, same networks{f" (avg of {k})" if k > 1 else ""}'] = f"{gain.mean():+.3f} ({(gain > 0).sum()}/{len(gain)} folds ahead)"
            rows.append(line)
        out[task] = pd.DataFrame(rows)
    return out

def markdown(tables:dict, header:str=HEADER)->str:
    parts = [header]
    for task, t in tables.items():
        md = ['| ' + ' | '.join(t.columns) + ' |', '|' + '---|' * len(t.columns)]
        md += ['| ' + ' | '.join('' if v != v else str(v) for v in r) + ' |' for r in t.itertuples(index=False)]
        parts.append(f'## {task}\n\n{NOTES.get(task, "")}\n\n' + '\n'.join(md) + '\n')
    return '\n'.join(parts)

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--configs', nargs='*', default=['resnet16', 'resnet32']); ap.add_argument('--folds', type=int, default=5)
    ap.add_argument('--members', type=int, default=3); ap.add_argument('--out', default='/tmp/imaging_cv.jsonl')
    ap.add_argument('--task', default='breast-ultrasound', choices=['breast-ultrasound', 'pneumonia-xray'])
    ap.add_argument('--tta', nargs='*', default=[], choices=list(TTA_VIEWS), help='also score test-time augmentation views')
    ap.add_argument('--table', nargs='*', default=[]); ap.add_argument('--write', action='store_true')
    ap.add_argument('--md', default=str(Path(__file__).with_suffix('.md')), help='the markdown file --write writes')
    a = ap.parse_args()
    if a.table:
        tables = table(a.table)
        for task, t in tables.items(): print(task); print(t.to_string(index=False))
        if a.write:
            out = Path(a.md); tmp = out.with_suffix('.md.tmp')
            tta = any(c.startswith('TTA ') for t in tables.values() for c in t.columns)  # rows scored with views get that header
            tmp.write_text(markdown(tables, TTA_HEADER if tta else HEADER)); tmp.replace(out)
    else: run(a.configs, a.folds, a.members, a.out, task=a.task, tta=a.tta)
