"""The serving runtimes and the batching, without the HTTP app: loading and warm-up, readiness, the float-array fast path of
scikit-learn models, metadata, dynamic batching and fixed-size batches (fast: tiny models, no server, no TensorFlow)."""
import asyncio, logging, time, warnings
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from medmaas_nb import runtimes as S
from medmaas_nb.runtimes import (ServedModel as ModelRuntime, SklearnRuntime, KerasRuntime, DynamicBatcher, fixed_batches, NotSupported,
                                 MAX_INSTANCES, OUTPUT_NAMES, RUNTIMES, _probe, _concat, _take, _len)
from medmaas_nb.errors import ModelNotReady
from medmaas_nb.tasks import Task, InputSpec, Feature, InvalidInput

FEATS = [Feature('age', min=18, max=90, dtype='int'), Feature('bmi', min=15.0, max=50.0)]

def task(kind='regression', spec=None, **kw):
    return Task('toy', 'clinical', kind, 'toy', 'a toy', load=None, input_spec=spec or InputSpec('tabular', list(FEATS)),
                primary_metric='r2', **kw)

class MV:
    "A registered version stand-in: `load()` returns the model."
    def __init__(self, model, version=3, card=None): self.model, self.version, self.loads, self.card = model, version, 0, card or {}
    def load(self): self.loads += 1; return self.model

def fitted():
    X = pd.DataFrame({'age': [20.0, 40, 60, 80], 'bmi': [20.0, 25, 30, 22]})
    return LinearRegression().fit(X, X['age'] * 0.5 + X['bmi'])

def run(coro): return asyncio.run(coro)

# --- the base runtime ---
@pytest.mark.parametrize('kind', ['regression', 'binary', 'multiclass', 'survival', 'retrieval'])
def test_output_names_by_kind(kind):
    rt = ModelRuntime(task(kind), MV(None))
    assert rt.output_meta == [{'name': OUTPUT_NAMES.get(kind, 'scores'), 'datatype': 'FP64', 'shape': [-1]}]
    assert OUTPUT_NAMES == {'regression': 'prediction', 'binary': 'probability', 'multiclass': 'probabilities', 'survival': 'risk'}

def test_a_new_runtime_is_not_ready():
    rt = ModelRuntime(task(), MV(None, 7))
    assert (rt.name, rt.version, rt.model, rt.ready, rt.pool, rt.max_rows) == ('toy', 7, None, False, None, MAX_INSTANCES)
    assert rt.platform == 'medmaas' and MAX_INSTANCES == 10_000
    X = rt.inputs([{'age': 30, 'bmi': 22.5}])
    for call in (rt.scores(X), rt.predict(X), rt.explain(X)):
        with pytest.raises(ModelNotReady) as e: run(call)
        assert str(e.value) == 'toy v7 is still loading; retry shortly.'

def test_load_warms_up_and_reports(caplog):
    mv = MV(fitted()); rt = ModelRuntime(task(), mv); seen = []
    rt.loaded = lambda: seen.append(('loaded', rt.model is mv.model, rt.ready))
    with caplog.at_level(logging.INFO, logger='medmaas_nb.runtimes'): assert rt.load() is rt
    assert mv.loads == 1 and rt.ready and seen == [('loaded', True, False)]
    msg = [r.getMessage() for r in caplog.records if r.name == 'medmaas_nb.runtimes']
    assert len(msg) == 1 and msg[0].startswith('toy v3 ready in ') and msg[0].endswith('s')
    assert 0 <= float(msg[0][len('toy v3 ready in '):-1]) < 60
    X = rt.inputs([{'age': 30, 'bmi': 22.5}, {'age': 50, 'bmi': 30.0}])
    assert isinstance(X, pd.DataFrame) and list(X.columns) == ['age', 'bmi']
    s = run(rt.scores(X))
    assert s.dtype == float and s == pytest.approx([37.5, 55.0])
    assert run(rt.predict(X)) == [{'prediction': pytest.approx(37.5)}, {'prediction': pytest.approx(55.0)}]
    assert rt.v2_outputs(s) == {'prediction': s}
    assert rt.inputs_v2({'input': np.array([[30.0, 22.5]])}).equals(X.iloc[:1])
    with pytest.raises(InvalidInput): rt.inputs([{'age': 10, 'bmi': 22.5}])
    with pytest.raises(InvalidInput): rt.inputs_v2({'x': np.zeros((1, 2))})

def test_warm_up_records_the_output_shape():
    class Probs:
        def predict_proba(self, X): return np.tile([0.2, 0.3, 0.5], (len(X), 1))
    rt = ModelRuntime(task('multiclass'), MV(Probs())).load()
    assert rt.output_meta[0] == {'name': 'probabilities', 'datatype': 'FP64', 'shape': [-1, 3]}
    assert run(rt.predict(rt.inputs([{'age': 30, 'bmi': 22.5}]))) == [{'prediction': '2', 'probabilities': {'0': 0.2, '1': 0.3, '2': 0.5}}]
    s = run(rt.scores(rt.inputs([{'age': 30, 'bmi': 22.5}])))
    assert s.shape == (1, 3) and s.dtype == np.float64

def test_warm_up_without_an_example_warns_and_still_loads(caplog):
    spec = InputSpec('tabular', [Feature('age', min=None, max=None)])
    rt = ModelRuntime(task(spec=spec), MV(fitted()))
    with caplog.at_level(logging.WARNING, logger='medmaas_nb.runtimes'): rt.load()
    assert rt.ready and rt.output_meta[0]['shape'] == [-1]
    assert any(r.getMessage().startswith('toy: no warm-up example (') and 'NoneType' in r.getMessage() for r in caplog.records)

def test_scores_are_floats_whatever_the_model_returns():
    class Ints:
        def predict(self, X): return np.arange(len(X))
    rt = ModelRuntime(task(), MV(Ints())).load()
    s = run(rt.scores(rt.inputs([{'age': 30, 'bmi': 22.5}] * 2)))
    assert s.dtype == np.float64 and s.tolist() == [0.0, 1.0]

def test_explain_and_metadata():
    served = {'explanation': {'background': {'records': [{'age': 50, 'bmi': 25.0}], 'weights': [1.0]}}}
    rt = ModelRuntime(task(explain=lambda m, X, s: [{'rows': len(X), 'model': type(m).__name__, 'served': s}]),
                      MV(fitted(), card={'served': served})).load()
    assert run(rt.explain(rt.inputs([{'age': 30, 'bmi': 22.5}]))) == [{'rows': 1, 'model': 'LinearRegression', 'served': served}]
    rt2 = ModelRuntime(task(), MV(fitted())).load()
    with pytest.raises(NotSupported, match='^toy has no explanation method.$'): run(rt2.explain(None))
    rt2.max_rows = 17
    m = rt2.metadata()
    assert m == {'name': 'toy', 'versions': ['3'], 'platform': 'medmaas', 'inputs': [{'name': 'input', 'datatype': 'FP64', 'shape': [-1, 2]}],
                 'outputs': [{'name': 'prediction', 'datatype': 'FP64', 'shape': [-1]}], 'parameters': {'max_rows': 17}}

def test_work_runs_on_the_runtime_pool():
    from concurrent.futures import ThreadPoolExecutor
    rt = ModelRuntime(task(), MV(fitted())).load()
    with ThreadPoolExecutor(1, thread_name_prefix='rt-pool') as pool:
        rt.pool = pool
        import threading
        assert run(rt.offload(lambda a, b: (threading.current_thread().name, a + b), 2, 3)) == ('rt-pool_0', 5)

# --- probe records ---
def test_probe_spreads_valid_records_over_the_ranges():
    spec = InputSpec('tabular', [Feature('age', min=18.4, max=90.6, dtype='int'), Feature('bmi', min=15.0, max=50.0),
                                 Feature('sex', dtype='category', categories=[0, 1])])
    recs = _probe(spec)
    assert len(recs) == 9 and recs[0] == spec.example()
    assert recs[1] == {'age': 19.0, 'bmi': 15.0, 'sex': 0} and recs[2] == {'age': 90.0, 'bmi': 50.0, 'sex': 1}
    assert [r['sex'] for r in recs[1:]] == [0, 1] * 4
    assert all(r['age'] == round(r['age']) and 19 <= r['age'] <= 90 and 15 <= r['bmi'] <= 50 for r in recs[1:])
    assert all(isinstance(r['age'], float) and isinstance(r['bmi'], float) for r in recs[1:])
    assert len({r['bmi'] for r in recs[3:]}) == 6 and recs == _probe(spec) and recs != _probe(spec, seed=1)
    assert len(_probe(spec, 3)) == 4
    first = InputSpec('tabular', [Feature('sex', dtype='category', categories=['f', 'm']), Feature('bmi', min=15.0, max=50.0)])
    assert _probe(first)[1] == {'sex': 'f', 'bmi': 15.0} and _probe(first)[2] == {'sex': 'm', 'bmi': 50.0}
    spec.validate(recs)  # every record is valid

# --- scikit-learn runtimes ---
def test_a_plain_numeric_model_takes_float_arrays(caplog):
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger='medmaas_nb.runtimes'):
        rt = SklearnRuntime(task(), MV(fitted())).load()
        assert rt.fast and rt.platform == 'sklearn'
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('default')
            rt.load()  # the filter goes in again, in front of 'default'
            warnings.warn('X does not have valid feature names, but LinearRegression was fitted with feature names', UserWarning)
            assert w == []
            warnings.warn('another warning', UserWarning)  # only that one message is silenced
            assert [str(x.message) for x in w] == ['another warning']
    assert 'toy: tables go to the model as float arrays' in [r.getMessage() for r in caplog.records]
    X = rt.inputs([{'age': 30, 'bmi': 22.5}, {'age': 50, 'bmi': 30.0}])
    assert isinstance(X, np.ndarray) and X.flags.f_contiguous and X.dtype == float and X.tolist() == [[30, 22.5], [50, 30]]
    V = rt.inputs_v2({'input': np.array([[30.0, 22.5]])})
    assert isinstance(V, np.ndarray) and V.flags.f_contiguous and V.tolist() == [[30, 22.5]]
    assert run(rt.scores(X)) == pytest.approx([37.5, 55.0])
    with pytest.raises(InvalidInput): rt.inputs([{'age': 10, 'bmi': 22.5}])

class Recorder:
    "A regression model that records whether scikit-learn was told the input is finite, and its input type."
    def __init__(self): self.seen = []
    def predict(self, X):
        import sklearn
        self.seen.append((type(X).__name__, sklearn.get_config()['assume_finite']))
        return np.asarray(X, dtype=float)[:, 0]

def test_arrays_skip_the_finiteness_check_tables_do_not():
    m = Recorder(); rt = SklearnRuntime(task(), MV(m)).load()
    assert rt.fast
    m.seen.clear(); rt._scores(np.array([[30.0, 20.0]])); rt._predict(np.array([[30.0, 20.0]]))
    assert m.seen == [('ndarray', True), ('ndarray', True)]
    m.seen.clear(); rt._scores(pd.DataFrame({'age': [30.0], 'bmi': [20.0]}))
    assert m.seen == [('DataFrame', False)]

@pytest.mark.parametrize('why', ['names', 'category', 'subclass_validate', 'subclass_from_v2', 'differs', 'differs_one_row', 'differs_predict', 'raises'])
def test_models_that_need_tables_keep_tables(why, caplog):
    spec = InputSpec('tabular', list(FEATS)); model = fitted()
    if why == 'category': spec = InputSpec('tabular', [*FEATS, Feature('site', dtype='category', categories=['a', 'b'])])
    if why == 'subclass_validate':
        class Spec(InputSpec):
            def validate(self, records, as_array=False): return super().validate(records, as_array)
        spec = Spec('tabular', list(FEATS))
    if why == 'subclass_from_v2':
        class Spec(InputSpec):
            def from_v2(self, tensors, as_array=False): return super().from_v2(tensors, as_array)
        spec = Spec('tabular', list(FEATS))
    class Picky:
        def __init__(self, how): self.how = how
        def predict(self, X):
            v = np.asarray(X, dtype=float)[:, 0].copy()
            if isinstance(X, np.ndarray):
                if self.how == 'raises': raise TypeError('tables only')
                if self.how == 'differs': v += 1e-12
                if self.how == 'differs_one_row' and len(X) == 1: v += 1
            return v
    if why in ('differs', 'differs_one_row', 'raises', 'names'): model = Picky(why)
    if why == 'names': model.feature_names_in_ = np.array(['bmi', 'age'], dtype=object)  # fitted with other column order
    t = task(spec=spec)
    if why == 'differs_predict':
        t = task(spec=spec); model = Picky('same')
        t.predict = lambda m, X: [type(X).__name__]  # different answers for arrays and tables
    if why == 'category': model = type('M', (), {'predict': lambda self, X: np.zeros(len(X))})()
    with caplog.at_level(logging.INFO, logger='medmaas_nb.runtimes'): rt = SklearnRuntime(t, MV(model)).load()
    assert rt.fast is False and rt.ready
    assert isinstance(rt.inputs([spec.example()]), pd.DataFrame)
    if why == 'raises': assert 'toy: float arrays not used (TypeError)' in [r.getMessage() for r in caplog.records]
    assert 'toy: tables go to the model as float arrays' not in [r.getMessage() for r in caplog.records]
    v2 = rt.inputs_v2(spec.to_v2(spec.validate([spec.example()])))
    assert isinstance(v2, pd.DataFrame)

# --- batching ---
def test_concat():
    a = np.array([[1, 2]]); assert _concat([a]) is a
    assert _concat([np.array([1]), [2, 3]]).tolist() == [1, 2, 3]
    assert _concat([[1], [2, 3]]) == [1, 2, 3]
    d = _concat([{'x': np.array([1]), 'y': [1]}, {'x': np.array([2, 3]), 'y': [2, 3]}])
    assert d['x'].tolist() == [1, 2, 3] and d['y'] == [1, 2, 3]
    f = _concat([pd.DataFrame({'a': [1]}, index=[5]), pd.DataFrame({'a': [2]}, index=[5])])
    assert f['a'].tolist() == [1, 2] and f.index.tolist() == [0, 1]

def test_take_and_len():
    assert _take([5, 6, 7], [2, 0]) == [7, 5] and _take(np.array([5, 6, 7]), [1]).tolist() == [6]
    f = _take(pd.DataFrame({'a': [1, 2, 3]}, index=[7, 8, 9]), [2, 0])
    assert f['a'].tolist() == [3, 1] and f.index.tolist() == [0, 1]
    d = _take({'x': np.array([1, 2, 3]), 'y': [4, 5, 6]}, [1, 1])
    assert d['x'].tolist() == [2, 2] and d['y'] == [5, 5]
    assert _len({'x': [1, 2, 3], 'y': [1]}) == 3 and _len([1, 2]) == 2 and _len(np.zeros((4, 2))) == 4

def test_fixed_batches_give_every_call_the_same_size():
    sizes, seen = [], []
    def fn(X): sizes.append(len(X)); seen.append(list(X)); return np.asarray(X) * 10
    out = fixed_batches(fn, np.arange(7), 3)
    assert out.tolist() == [0, 10, 20, 30, 40, 50, 60] and sizes == [3, 3, 3]
    assert seen[-1] == [6, 6, 6]  # the last chunk padded with copies of its own first input
    sizes.clear(); assert fixed_batches(fn, np.arange(6), 3).tolist() == [0, 10, 20, 30, 40, 50] and sizes == [3, 3]
    lst = fixed_batches(lambda X: [f'r{v}' for v in X], [1, 2, 3], 2)
    assert lst == ['r1', 'r2', 'r3'] and isinstance(lst, list)
    assert fixed_batches(lambda X: ['empty', len(X)], [], 4) == ['empty', 0]
    assert fixed_batches(fn, np.arange(2), 5).tolist() == [0, 10] and sizes[-1] == 5

def test_batching_defaults():
    b = DynamicBatcher(len)
    assert (b.max_batch, b.max_wait, b.observe) == (32, 0.002, None)
    rt = KerasRuntime(task(), MV(None))
    assert (rt.max_batch, rt._b_scores.max_wait, rt._b_predict.max_wait, rt._b_scores.observe) == (32, 0.002, 0.002, None)

def test_the_batcher_groups_concurrent_requests():
    calls, observed = [], []
    def fn(X): calls.append(len(X)); return np.asarray(X) * 2
    b = DynamicBatcher(fn, max_batch=8, max_wait_ms=50, observe=observed.append)
    assert (b.max_batch, b.max_wait) == (8, 0.05)
    async def go():
        return await asyncio.gather(*(b(np.array([i, i])) for i in range(3)), b(np.array([9])))
    out = run(go())
    assert [o.tolist() for o in out] == [[0, 0], [2, 2], [4, 4], [18]]
    assert calls == [7] and observed == [7]

def test_the_batcher_caps_a_batch_and_runs_the_rest_next():
    calls = []
    def fn(X): calls.append(list(X)); return [v + 100 for v in X]
    b = DynamicBatcher(fn, max_batch=4, max_wait_ms=30)
    async def go(): return await asyncio.gather(*(b([i, i]) for i in range(3)), b(list(range(10, 16))))
    out = run(go())
    assert out == [[100, 100], [101, 101], [102, 102], [110, 111, 112, 113, 114, 115]]
    assert calls == [[0, 0, 1, 1], [2, 2], [10, 11, 12, 13, 14, 15]]  # an oversized request runs alone

def test_the_batcher_waits_at_most_max_wait():
    b = DynamicBatcher(lambda X: X, max_batch=100, max_wait_ms=80)
    async def go():
        t0 = time.perf_counter(); r = await b([1]); return r, time.perf_counter() - t0
    r, dt = run(go())
    assert r == [1] and 0.06 < dt < 1.0
    full = DynamicBatcher(lambda X: X, max_batch=2, max_wait_ms=5000)
    async def go2():
        t0 = time.perf_counter(); r = await full([1, 2]); return r, time.perf_counter() - t0
    r, dt = run(go2())
    assert r == [1, 2] and dt < 1.0  # a full batch does not wait

def test_the_batcher_passes_errors_to_every_caller_and_keeps_going():
    n = [0]
    def fn(X):
        n[0] += 1
        if n[0] == 1: raise ValueError('model failed')
        return X
    b = DynamicBatcher(fn, max_batch=8, max_wait_ms=20)
    async def go():
        first = await asyncio.gather(b([1]), b([2]), return_exceptions=True)
        return first, await b([3])
    first, then = run(go())
    assert [type(e) for e in first] == [ValueError, ValueError] and str(first[0]) == 'model failed' and then == [3]

def test_a_cancelled_caller_does_not_break_the_batch():
    def fn(X): time.sleep(0.05); return X
    b = DynamicBatcher(fn, max_batch=8, max_wait_ms=10)
    async def go():
        t1 = asyncio.ensure_future(b([1])); t2 = asyncio.ensure_future(b([2]))
        await asyncio.sleep(0.02); t1.cancel()
        return await t2
    assert run(go()) == [2]

# --- Keras runtimes (no TensorFlow: the model is a stand-in) ---
class ViewStack:
    def __init__(self, views): self.views = views

@pytest.fixture
def no_tf(monkeypatch):
    import medmaas_nb.core as core
    monkeypatch.setattr(core, 'keras_layer', lambda name: {'ViewStack': ViewStack}[name])

class Net:
    def __init__(self, layers=()): self.layers = list(layers); self.batches = []
    def predict(self, X): self.batches.append(len(X)); return np.asarray(X, dtype=float)[:, 0] * 2

def test_keras_runtime_batches_in_one_fixed_size(no_tf):
    net = Net(); rt = KerasRuntime(task(), MV(net), max_batch=4, max_wait_ms=5)
    assert rt.platform == 'keras' and RUNTIMES == {'sklearn': SklearnRuntime, 'keras': KerasRuntime}
    assert (rt.max_batch, rt.network_batch, rt._b_scores.max_batch, rt._b_predict.max_batch) == (4, 4, 4, 4)
    rt.load()
    assert rt.max_batch == 4 and set(net.batches) == {4}
    X = rt.inputs([{'age': a, 'bmi': 20.0} for a in range(20, 26)])
    net.batches.clear()
    assert run(rt.scores(X)) == pytest.approx([40, 42, 44, 46, 48, 50]) and net.batches == [4, 4]
    assert [p['prediction'] for p in run(rt.predict(X))] == pytest.approx([40, 42, 44, 46, 48, 50])
    assert rt._scores(X).tolist() == [40, 42, 44, 46, 48, 50]

def test_keras_runtime_observes_batch_sizes(no_tf):
    seen = []; rt = KerasRuntime(task(), MV(Net()), max_batch=8, max_wait_ms=1, observe=seen.append).load()
    run(rt.scores(rt.inputs([{'age': 30, 'bmi': 20.0}] * 3)))
    assert seen == [3] and rt._b_scores.max_wait == 0.001 and rt._b_predict.observe == seen.append

@pytest.mark.parametrize('views, per_call', [(None, 32), (1, 32), (2, 16), (4, 8), (3, 10), (64, 1)])
def test_keras_runtime_takes_fewer_inputs_per_call_for_several_views(no_tf, views, per_call, caplog):
    card = {'served': {'views': views}} if views else {}
    net = Net([object(), ViewStack([None] * 7)])  # the layers say 7 views: the service reads the card, never the layers
    with caplog.at_level(logging.INFO, logger='medmaas_nb.runtimes'): rt = KerasRuntime(task(), MV(net, card=card)).load()
    assert rt.network_batch == 32 and (rt.max_batch, rt._b_scores.max_batch, rt._b_predict.max_batch) == (per_call,) * 3
    logged = [r.getMessage() for r in caplog.records if 'views per input' in r.getMessage()]
    assert logged == ([f'toy: {views} views per input, {per_call} inputs per model call'] if views and views > 1 else [])

@pytest.mark.parametrize('layers, views', [([], 1), ([object()], 1), ([object(), ViewStack([None] * 4)], 4),
                                           ([ViewStack([None] * 2), ViewStack([None] * 5)], 5)])
def test_keras_describe_records_the_views_for_the_card(no_tf, layers, views):
    assert KerasRuntime.describe(Net(layers)) == {'views': views}
    assert SklearnRuntime.describe(object()) == {'views': 1}

def test_keras_runtime_without_layers(no_tf):
    assert KerasRuntime(task(), MV(type('M', (), {'predict': lambda s, X: np.zeros(len(X))})())).load().max_batch == 32

def test_model_path_finds_the_file_in_a_saved_folder_or_an_mlflow_model(tmp_path):
    from medmaas_nb.runtimes import ModelRuntime
    assert SklearnRuntime.model_path(tmp_path) == tmp_path/'model.skops' and ModelRuntime.model_path(tmp_path) == tmp_path
    assert KerasRuntime.model_path(tmp_path) == tmp_path/'model.keras'  # nothing there yet: where `save` writes
    (tmp_path/'MLmodel').write_text('flavors: {}')
    assert KerasRuntime.model_path(tmp_path) == tmp_path/'data'/'model.keras'  # an MLflow Model keeps it under data/
    (tmp_path/'model.keras').write_bytes(b'')
    assert KerasRuntime.model_path(tmp_path) == tmp_path/'model.keras'  # a file `save` wrote wins
    assert ModelRuntime.describe(object()) == {'views': 1}
