"""Compare survival recipes for metastasis-genes on its training split only (never the 50 held-out patients).

The task's shipped candidates plus recipes that were not shipped (the scikit-survival user guide's boosted stumps, boosting
with subsampling or dropout, forests with other leaf sizes, extremely randomised survival trees, a Cox model on the four
clinical variables alone, and the published Wang et al. 2005 signature, as published and refit), each scored by 5 x 5-fold
CV on the 148 training patients with the same folds; feature selection and scaling are refit inside every fold. C-index:
Harrell's C pooled as the pipeline pools it, with the corrected-t interval.

    PYTHONPATH=$PWD python benchmarks/metastasis_candidates.py            # print the table
    PYTHONPATH=$PWD python benchmarks/metastasis_candidates.py --write    # and write benchmarks/metastasis_candidates.md
"""
import time
import numpy as np
from sklearn.base import BaseEstimator

class SignatureCox(BaseEstimator):
    "Cox model on the published signature's weighted sum within each ER group, and ER: refits its two constants and scales."
    def __init__(self, alpha:float=1.0): self.alpha = alpha
    def _features(self, X):
        from medmaas_nb.expression import wang_signature_sums
        er, sums = wang_signature_sums(X); pos = er == 'positive'
        return np.c_[pos * sums, ~pos * sums, pos]
    def fit(self, X, y):
        from sksurv.linear_model import CoxPHSurvivalAnalysis
        F = self._features(X); self.mean_, self.scale_ = F.mean(0), F.std(0) + 1e-12
        self.cox_ = CoxPHSurvivalAnalysis(alpha=self.alpha).fit((F - self.mean_) / self.scale_, y); return self
    def predict(self, X): return self.cox_.predict((self._features(X) - self.mean_) / self.scale_)

def extra_recipes(seed:int=0)->dict:
    "Recipes compared but not shipped as candidates."
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sksurv.ensemble import GradientBoostingSurvivalAnalysis as GB, RandomSurvivalForest as RSF, ExtraSurvivalTrees
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from medmaas_nb.expression import _prep, PublishedRelapseScore
    P = lambda m: Pipeline([('prep', _prep()), ('model', m)])
    forest = lambda cls, n, leaf: P(cls(n_estimators=n, min_samples_leaf=leaf, max_features='sqrt', random_state=seed, n_jobs=1))
    return {
        "user guide's stumps (lr 1.0, 100 stages)": P(GB(n_estimators=100, learning_rate=1.0, max_depth=1, random_state=seed)),
        'stumps lr 1.0, subsample 0.5': P(GB(n_estimators=100, learning_rate=1.0, max_depth=1, subsample=0.5, random_state=seed)),
        'stumps lr 0.5, subsample 0.5, 300 stages': P(GB(n_estimators=300, learning_rate=0.5, max_depth=1, subsample=0.5,
                                                        random_state=seed)),
        'stumps lr 1.0, dropout 0.1': P(GB(n_estimators=100, learning_rate=1.0, max_depth=1, dropout_rate=0.1, random_state=seed)),
        'survival forest, leaf 5': forest(RSF, 200, 5),
        'survival forest, leaf 20': forest(RSF, 200, 20),
        'survival forest, leaf 10, 500 trees': forest(RSF, 500, 10),
        'extra survival trees, leaf 10, 500 trees': forest(ExtraSurvivalTrees, 500, 10),
        'Cox on age, ER, grade, size only': Pipeline([('clinical', ColumnTransformer([('c', _prep(), ['age', 'er', 'grade', 'size'])])),
                                                      ('model', CoxPHSurvivalAnalysis(alpha=1.0))]),
        'Wang 2005 relapse score, published weights (nothing fitted)': PublishedRelapseScore(),
        'Cox on the Wang score per ER group + ER, no penalty': SignatureCox(alpha=0.0),
        'Cox on the Wang score per ER group + ER, ridge alpha 1': SignatureCox(alpha=1.0),
    }

def table(seed:int=0)->str:
    from medmaas_nb.expression import load_metastasis_task, metastasis_candidates
    from medmaas_nb.evaluate import cross_validate, summarize_cv
    X, y = load_metastasis_task(seed=seed)['train']
    lines = [f'Training split only: {len(y)} patients ({int(y[y.dtype.names[0]].sum())} metastases), 5 x 5-fold CV, the same '
             'folds for every recipe. Harrell\'s C (corrected-t 95 % interval; sd over the 25 folds).', '',
             '| recipe | shipped candidate | C-index | interval | sd | seconds |', '|---|---|---|---|---|---|']
    recipes = {**{k: (v, 'yes') for k, v in metastasis_candidates(seed=seed).items()},
               **{k: (v, 'no') for k, v in extra_recipes(seed).items()}}
    for name, (model, shipped) in recipes.items():
        t0 = time.perf_counter()
        s = summarize_cv(cross_validate(model, X, y, 'survival', 5, 5, seed))['c_index']
        lines.append(f"| {name} | {shipped} | {s['value']:.3f} | [{s['ci_low']:.3f}, {s['ci_high']:.3f}] | {s['sd']:.3f} | "
                     f"{time.perf_counter() - t0:.0f} |")
        print(lines[-1], flush=True)
    return '\n'.join(lines)

if __name__ == '__main__':
    import warnings; warnings.filterwarnings('ignore')
    from common import parser, write_table
    a = parser(__file__, __doc__).parse_args()
    body = table()
    if a.write: write_table(__file__, 'metastasis-genes recipes, compared on the training split', 'The 50 held-out patients are not read.', body)
