"""Compare the promoter task's feature maps on its training split only (never the 27 held-out sequences).

The 79 training sequences (the pipeline's stratified 75 % split, seed 0) are scored by 10-fold stratified CV, repeated with
10 different fold draws; every feature map is a fixed map of each sequence (no fitting, no labels), so one Gram matrix per
map serves every fold. The table gives the mean number of out-of-fold errors (of 79) per C, and the sd over the 10 draws.

    PYTHONPATH=$PWD python benchmarks/promoter_features.py            # print the table
    PYTHONPATH=$PWD python benchmarks/promoter_features.py --write    # and write benchmarks/promoter_features.md
"""
import time
import numpy as np

def feature_maps()->dict:
    "Every feature map compared: the weighted-degree maps and the k-mer spectrum with and without per-k scaling."
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer
    from medmaas_nb.genomics import WeightedDegree, KmerCounts
    maps = {f'weighted degree K={K}': WeightedDegree(K) for K in range(1, 7)}
    for per_k in (False, True):
        tag = ', per-k scaled' if per_k else ', raw frequencies'
        maps[f'spectrum k=1..6{tag}'] = make_pipeline(KmerCounts(1, 6, per_k=per_k), Normalizer())
        maps[f'spectrum k=1..6 both strands{tag}'] = make_pipeline(KmerCounts(1, 6, canonical=True, per_k=per_k), Normalizer())
    return maps

def repeated_cv_errors(cands:dict, X, y, repeats:int=10, folds:int=10)->dict:
    "Out-of-fold errors of each candidate pipeline (features + `MarginSVC`), one count per fold draw (the task's own CV code)."
    from medmaas_nb.genomics import gram_matrices, cv_decisions
    grams, idx = gram_matrices(cands, X), np.arange(len(y))
    draws = [cv_decisions(cands, grams, y, idx, folds, seed) for seed in range(repeats)]
    return {name: np.array([int(((d[name] > 0) != y).sum()) for d in draws]) for name in cands}

def table(Cs=(1.0, 3.0, 10.0))->str:
    from medmaas_nb.genomics import load_promoter_task
    X, y = load_promoter_task()['train']; y = np.asarray(y)
    lines = [f'Training split only: {len(y)} sequences ({int(y.sum())} promoters), 10-fold stratified CV x 10 fold draws. '
             'Mean out-of-fold errors of 79 (sd over the draws).', '',
             '| features | ' + ' | '.join(f'C = {C:g}' for C in Cs) + ' |', '|---|' + '---|' * len(Cs)]
    from sklearn.pipeline import make_pipeline
    from medmaas_nb.genomics import MarginSVC
    cands = {(name, C): make_pipeline(fmap, MarginSVC(C)) for name, fmap in feature_maps().items() for C in Cs}
    errors = repeated_cv_errors(cands, X, y)
    for name in feature_maps():
        cells = [errors[(name, C)] for C in Cs]
        lines.append(f'| {name} | ' + ' | '.join(f'{e.mean():.1f} ({e.std():.1f})' for e in cells) + ' |')
    return '\n'.join(lines)

if __name__ == '__main__':
    from common import parser, write_table
    a = parser(__file__, __doc__).parse_args()
    t0 = time.perf_counter(); body = table()
    print(body); print(f'({time.perf_counter() - t0:.1f} s)')
    if a.write: write_table(__file__, 'Promoter features, compared on the training split',
                            'Used to decide the promoter candidates; the held-out sequences are not read.', body)
