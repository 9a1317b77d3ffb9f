"Metrics and intervals: each figure against a hand computation or scikit-learn, and the edge cases (one class, ties, constant truth)."
import math
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm
from medmaas_nb.evaluate import (survival_fields, compute_metrics, rank_auc, fast_metrics, bootstrap_metrics, summarize_cv,
                                 _average_precision)

nan = float('nan')
def same(a, b):
    "Two metric dicts with the same keys and values (NaN equals NaN)."
    assert list(a) == list(b), (list(a), list(b))
    for k in a: assert (math.isnan(a[k]) and math.isnan(b[k])) if (isinstance(a[k], float) and math.isnan(a[k])) else a[k] == pytest.approx(b[k], abs=1e-12), k

def surv(events, times, order=('event', 'time')):
    dt = [(order[0], bool if order[0] == 'event' else float), (order[1], bool if order[1] == 'event' else float)]
    y = np.zeros(len(events), dtype=dt); y['event'] = events; y['time'] = times
    return y

def test_survival_fields_in_either_order():
    assert survival_fields(surv([True], [1.0])) == ('event', 'time')
    assert survival_fields(surv([True], [1.0], ('time', 'event'))) == ('event', 'time')

def test_regression_metrics():
    y, p = np.array([1.0, 2, 4, 7]), np.array([1.5, 2, 3, 8])
    m = compute_metrics('regression', list(y), p)
    assert m == pytest.approx({'r2': 1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2), 'mse': np.mean((y - p) ** 2), 'rmse': np.sqrt(np.mean((y - p) ** 2)), 'mae': np.mean(np.abs(y - p))})
    same(fast_metrics('regression', y, p), m)
    assert fast_metrics('regression', [3, 3], [3, 3])['r2'] == 1.0 and fast_metrics('regression', [3, 3], [3, 4])['r2'] == 0.0

def test_binary_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    s = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.5, 0.2])
    m = compute_metrics('binary', y, s)
    # threshold 0.5: predicted 0 1 0 1 0 1 1 0 -> tp 3, fn 1, tn 3, fp 1
    assert m['sensitivity'] == 0.75 and m['specificity'] == 0.75 and m['accuracy'] == 0.75 and m['f1'] == 0.75
    assert m['balanced_accuracy'] == 0.75 and m['brier'] == pytest.approx(np.mean((s - y) ** 2))
    assert m['roc_auc'] == pytest.approx(skm.roc_auc_score(y, s)) and m['average_precision'] == pytest.approx(skm.average_precision_score(y, s))
    m7 = compute_metrics('binary', y, s, threshold=0.7)  # predicted positive: 0.8, 0.9 -> tp 2, fn 2, tn 4, fp 0
    assert m7['sensitivity'] == 0.5 and m7['specificity'] == 1.0 and m7['f1'] == pytest.approx(2 / 3)
    assert compute_metrics('binary', y, s, threshold=0.5)['sensitivity'] == compute_metrics('binary', y, np.where(s == 0.5, 0.5, s))['sensitivity']
    assert compute_metrics('binary', [0, 1], [0.5, 0.5])['sensitivity'] == 1.0  # the threshold itself is positive
    same(fast_metrics('binary', y, s), m); same(fast_metrics('binary', y, s, 0.7), m7)

@pytest.mark.parametrize('seed', range(6))
def test_fast_metrics_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed); n = 40 + seed
    y = rng.integers(0, 2, n); s = np.round(rng.random(n), 1)  # ties
    same(fast_metrics('binary', y, s, 0.4), compute_metrics('binary', y, s, threshold=0.4))
    P = rng.dirichlet(np.ones(4), n); yc = rng.integers(0, 4, n)
    same(fast_metrics('multiclass', yc, P), compute_metrics('multiclass', yc, P))
    yr = rng.normal(size=n); pr = yr + rng.normal(size=n)
    same(fast_metrics('regression', yr, pr), compute_metrics('regression', yr, pr))

def test_one_class_and_empty_sides():
    for y, s in (([1, 1, 1], [0.2, 0.7, 0.9]), ([0, 0, 0], [0.2, 0.7, 0.9])):
        m, f = compute_metrics('binary', y, s), fast_metrics('binary', y, s)
        assert math.isnan(m['roc_auc']) and math.isnan(m['average_precision']) and math.isnan(f['roc_auc']) and math.isnan(f['average_precision'])
    f = fast_metrics('binary', [1, 1, 1], [0.2, 0.7, 0.9])
    assert f['sensitivity'] == pytest.approx(2 / 3) and math.isnan(f['specificity']) and f['balanced_accuracy'] == pytest.approx(2 / 3)
    f = fast_metrics('binary', [0, 0], [0.1, 0.2])
    assert f['f1'] == 0.0 and f['specificity'] == 1.0 and math.isnan(f['sensitivity']) and f['accuracy'] == 1.0
    m = compute_metrics('binary', [0, 0], [0.1, 0.2])
    assert m['f1'] == 0.0 and math.isnan(m['sensitivity']) and m['specificity'] == 1.0
    m = compute_metrics('binary', [1, 1], [0.6, 0.7])
    assert math.isnan(m['specificity']) and m['sensitivity'] == 1.0

def test_one_positive_is_enough_for_an_auc():
    y, s = np.array([0, 0, 1, 0]), np.array([0.1, 0.7, 0.6, 0.2])
    f = fast_metrics('binary', y, s)
    assert f['roc_auc'] == pytest.approx(2 / 3) and f['average_precision'] == pytest.approx(0.5)
    same(f, compute_metrics('binary', y, s))

def test_rank_auc_and_average_precision():
    y = np.array([0, 1, 0, 1, 1]); s = np.array([0.1, 0.4, 0.4, 0.8, 0.3])
    assert rank_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s)) and rank_auc(y, s) == pytest.approx(4.5 / 6)
    assert rank_auc(np.array([1, 0]), np.array([0.9, 0.1])) == 1.0 and rank_auc(np.array([1, 0]), np.array([0.1, 0.9])) == 0.0
    assert math.isnan(rank_auc(np.array([1, 1]), np.array([0.1, 0.9]))) and math.isnan(rank_auc(np.array([0, 0]), np.array([0.1, 0.9])))
    assert _average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))
    assert _average_precision(np.array([1, 0, 0]), np.array([0.9, 0.5, 0.1])) == 1.0
    assert _average_precision(np.array([0, 0, 1]), np.array([0.9, 0.5, 0.1])) == pytest.approx(1 / 3)
    assert _average_precision(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # one tie: one threshold
    assert math.isnan(_average_precision(np.array([0, 0]), np.array([0.3, 0.5])))

def test_multiclass_metrics():
    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])
    y = np.array([0, 1, 2, 1, 2])
    m = compute_metrics('multiclass', y, P)
    assert m['accuracy'] == 0.8 and m['balanced_accuracy'] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m['f1_macro'] == pytest.approx(skm.f1_score(y, P.argmax(1), average='macro'))
    assert m['roc_auc_ovr'] == pytest.approx(skm.roc_auc_score(y, P, multi_class='ovr'))
    same(fast_metrics('multiclass', y, P), m)
    # a class never seen in the truth: scikit-learn refuses the AUC, both give NaN
    y2 = np.array([0, 1, 1, 1, 0])
    assert math.isnan(compute_metrics('multiclass', y2, P)['roc_auc_ovr']) and math.isnan(fast_metrics('multiclass', y2, P)['roc_auc_ovr'])
    same(fast_metrics('multiclass', y2, P), compute_metrics('multiclass', y2, P))
    # rows that do not sum to 1, and two classes
    assert math.isnan(fast_metrics('multiclass', y, P * 2)['roc_auc_ovr'])
    m2 = compute_metrics('multiclass', y, P * 2)  # scikit-learn refuses scores that are not probabilities
    assert list(m2) == ['accuracy', 'f1_macro', 'balanced_accuracy', 'roc_auc_ovr'] and isinstance(m2['roc_auc_ovr'], float) and math.isnan(m2['roc_auc_ovr'])
    # the last class never predicted, and a class in neither truth nor predictions
    P4 = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.3, 0.6, 0.1]])
    for y4 in ([0, 1, 2, 1], [0, 1, 0, 1]):
        same(fast_metrics('multiclass', y4, P4), compute_metrics('multiclass', y4, P4))
    assert fast_metrics('multiclass', [0, 1, 0, 1], P4)['f1_macro'] == pytest.approx(skm.f1_score([0, 1, 0, 1], P4.argmax(1), average='macro'))
    P2 = np.array([[0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    assert math.isnan(fast_metrics('multiclass', [1, 0, 0], P2)['roc_auc_ovr'])
    # a predicted class absent from the truth counts in the macro F1 (as scikit-learn does)
    y3 = np.array([0, 1, 1, 1, 1]); P3 = np.eye(3)[[0, 1, 2, 1, 1]]
    same(fast_metrics('multiclass', y3, P3), compute_metrics('multiclass', y3, P3))

def test_survival_and_retrieval_and_unknown_kinds():
    y = surv([True, True, False, True], [1.0, 3.0, 4.0, 5.0])
    assert compute_metrics('survival', y, [4.0, 3.0, 2.0, 1.0]) == {'c_index': 1.0}
    assert compute_metrics('survival', y, [1.0, 2.0, 3.0, 4.0]) == {'c_index': 0.0}
    assert fast_metrics('survival', y, [1, 2, 3, 4]) is None
    S = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.7], [0.3, 0.3, 0.1]])  # relevant: 0, 1, 1 -> ranks 1, 2, 2 (a tie counts against)
    m = compute_metrics('retrieval', [0, 1, 1], S)
    assert m == pytest.approx({'mrr': (1 + 0.5 + 0.5) / 3, 'recall_at_1': 1 / 3, 'recall_at_5': 1.0, 'recall_at_10': 1.0})
    S10 = np.tile(np.linspace(1, 0, 12), (2, 1))  # relevant ranked 6th and 11th
    m = compute_metrics('retrieval', [5, 10], S10)
    assert m == pytest.approx({'mrr': (1 / 6 + 1 / 11) / 2, 'recall_at_1': 0.0, 'recall_at_5': 0.0, 'recall_at_10': 0.5})
    with pytest.raises(ValueError, match=r"Unknown task kind 'x'; expected one of \('binary'"): compute_metrics('x', [1], [1])

def _boot_by_hand(kind, y, s, n_boot, seed, level, **kw):
    rng = np.random.default_rng(seed); n = len(y); out = {}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        for k, v in compute_metrics(kind, y[idx], s[idx], **kw).items():
            if not math.isnan(v): out.setdefault(k, []).append(v)
    a = (1 - level) / 2
    return {k: (np.quantile(v, a), np.quantile(v, 1 - a)) for k, v in out.items()}

@pytest.mark.parametrize('level', [0.95, 0.8])
def test_bootstrap_intervals_are_percentiles_of_resampled_metrics(level):
    rng = np.random.default_rng(1); y = rng.integers(0, 2, 30); s = np.clip(y * 0.3 + rng.random(30) * 0.7, 0, 1)
    b = bootstrap_metrics('binary', pd.Series(y, index=range(100, 130)), s, n_boot=60, seed=3, level=level, threshold=0.45)
    ref = _boot_by_hand('binary', y, s, 60, 3, level, threshold=0.45)
    point = compute_metrics('binary', y, s, threshold=0.45)
    assert list(b) == list(point)
    for k in point:
        assert b[k]['value'] == pytest.approx(point[k])
        assert (b[k]['ci_low'], b[k]['ci_high']) == pytest.approx(ref[k]), k
        assert b[k]['ci_low'] <= b[k]['ci_high']

def test_bootstrap_is_seeded_and_wider_at_higher_level():
    rng = np.random.default_rng(2); y = rng.normal(size=25); p = y + rng.normal(size=25)
    a = bootstrap_metrics('regression', y, p, n_boot=80, seed=5)
    assert a == bootstrap_metrics('regression', y, p, n_boot=80, seed=5) and a != bootstrap_metrics('regression', y, p, n_boot=80, seed=6)
    w = bootstrap_metrics('regression', y, p, n_boot=80, seed=5, level=0.5)
    assert a['mse']['ci_low'] < w['mse']['ci_low'] < w['mse']['ci_high'] < a['mse']['ci_high']
    assert (a['r2']['ci_low'], a['r2']['ci_high']) == pytest.approx(_boot_by_hand('regression', y, p, 80, 5, 0.95)['r2'])
    assert bootstrap_metrics('regression', y, p) == bootstrap_metrics('regression', y, p, n_boot=1000, seed=0, level=0.95)  # the defaults
    assert bootstrap_metrics('regression', y, p) != bootstrap_metrics('regression', y, p, n_boot=1001, seed=0)
    assert bootstrap_metrics('regression', y, p) != bootstrap_metrics('regression', y, p, n_boot=1000, seed=1)

def test_bootstrap_without_resamples_or_with_one_class_gives_nan_intervals():
    b = bootstrap_metrics('regression', [1.0, 2.0, 3.0], [1.0, 2.5, 3.5], n_boot=0)
    assert all(math.isnan(v['ci_low']) and math.isnan(v['ci_high']) for v in b.values()) and b['mae']['value'] == pytest.approx(1 / 3)
    b = bootstrap_metrics('binary', [1, 1, 1, 1], [0.2, 0.4, 0.6, 0.9], n_boot=20)
    assert math.isnan(b['roc_auc']['value']) and math.isnan(b['roc_auc']['ci_low']) and math.isnan(b['specificity']['ci_high'])
    assert b['sensitivity']['ci_low'] <= b['sensitivity']['value'] == 0.5 <= b['sensitivity']['ci_high']
    assert all(isinstance(x, float) for v in b.values() for x in v.values())

def test_bootstrap_of_other_kinds_uses_compute_metrics():
    y = surv([True, False, True, True, False, True], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]); r = np.array([6.0, 2.0, 4.0, 3.0, 1.0, 0.5])
    b = bootstrap_metrics('survival', y, r, n_boot=30, seed=1)
    assert b['c_index']['value'] == compute_metrics('survival', y, r)['c_index'] and b['c_index']['ci_low'] <= b['c_index']['ci_high']
    assert not math.isnan(b['c_index']['ci_low'])

def test_bootstrap_skips_resamples_a_metric_refuses():
    # multiclass: resamples that miss a class have a NaN AUC and are skipped for that metric only
    P = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]]); y = np.array([0, 1, 2, 0])
    b = bootstrap_metrics('multiclass', y, P, n_boot=40, seed=0)
    ref = _boot_by_hand('multiclass', y, P, 40, 0, 0.95)
    assert (b['roc_auc_ovr']['ci_low'], b['roc_auc_ovr']['ci_high']) == pytest.approx(ref['roc_auc_ovr'])
    assert (b['accuracy']['ci_low'], b['accuracy']['ci_high']) == pytest.approx(ref['accuracy'])

def test_bootstrap_skips_resamples_that_raise(monkeypatch):
    import medmaas_nb.evaluate as ev
    calls = []
    def flaky(kind, y, s, **kw):
        assert kind == 'regression' and kw == {}
        calls.append(1)
        if len(calls) % 2: raise ZeroDivisionError
        return {'mse': float(len(calls))}
    monkeypatch.setattr(ev, 'fast_metrics', flaky)
    b = bootstrap_metrics('regression', [1.0, 2.0], [1.0, 2.0], n_boot=4, level=0.5)
    assert b['mse']['ci_low'] == np.quantile([2.0, 4.0], 0.25) and b['mse']['ci_high'] == np.quantile([2.0, 4.0], 0.75)
    monkeypatch.setattr(ev, 'fast_metrics', lambda *a, **k: (_ for _ in ()).throw(ValueError()))
    assert math.isnan(bootstrap_metrics('regression', [1.0, 2.0], [1.0, 2.0], n_boot=3)['r2']['ci_low'])

def test_summarize_cv_uses_the_corrected_t_interval():
    f = pd.DataFrame({'fold': range(5), 'auc': [0.7, 0.8, 0.75, np.nan, 0.65], 'r': [1.0] * 5, 'fit_s': [1.0] * 5,
                      'n_train': [80, 80, 80, 80, 82], 'n_test': [20, 20, 20, 20, 18]})
    out = summarize_cv(f, level=0.9)
    assert set(out) == {'auc', 'r'}
    v = np.array([0.7, 0.8, 0.75, 0.65]); ratio = np.mean([0.25, 0.25, 0.25, 0.25, 18 / 82])
    half = stats.t.ppf(0.95, 3) * math.sqrt((1 / 4 + ratio) * v.std(ddof=1) ** 2)
    assert out['auc'] == pytest.approx({'value': v.mean(), 'sd': v.std(ddof=1), 'ci_low': v.mean() - half, 'ci_high': v.mean() + half, 'n_folds': 4})
    assert out['r'] == {'value': 1.0, 'sd': 0.0, 'ci_low': 1.0, 'ci_high': 1.0, 'n_folds': 5}
    assert summarize_cv(f)['auc']['ci_high'] - summarize_cv(f)['auc']['ci_low'] > out['auc']['ci_high'] - out['auc']['ci_low']

def test_summarize_cv_with_one_fold_or_an_empty_column():
    f = pd.DataFrame({'fold': [0], 'a': [0.5], 'b': [np.nan], 'c': [0.25], 'n_train': [10], 'n_test': [5]})
    out = summarize_cv(f)
    assert sorted(out) == ['a', 'c']
    for k, v in [('a', 0.5), ('c', 0.25)]:  # one fold gives a figure but no interval: NaN, not a zero-width interval
        assert {x: out[k][x] for x in ('value', 'sd', 'n_folds')} == {'value': v, 'sd': 0.0, 'n_folds': 1}
        assert math.isnan(out[k]['ci_low']) and math.isnan(out[k]['ci_high'])
    assert isinstance(out['a']['n_folds'], int) and isinstance(out['a']['value'], float)
    f = pd.DataFrame({'fold': [0, 1], 'a': [0.4, 0.6], 'n_train': [10, 10], 'n_test': [10, 10]})
    half = stats.t.ppf(0.975, 1) * math.sqrt((1 / 2 + 1) * np.std([0.4, 0.6], ddof=1) ** 2)
    assert summarize_cv(f)['a']['ci_low'] == pytest.approx(0.5 - half)
