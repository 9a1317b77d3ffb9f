"The HTTP service against a real uvicorn server on 127.0.0.1: auth, limits, bad input, v2 clients, fuzzing, batching, CLI."
import asyncio, hashlib, json, os, subprocess, sys, threading, time, warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import httpx
import numpy as np
import pytest
from conftest import free_port, require_module
from medmaas_nb.tasks import get_task
from medmaas_nb.registry import Registry, save_model, make_card
from medmaas_nb.security import KeyStore, AuditLog
from medmaas_nb.client import Client, ServiceError, ServiceProcess
from medmaas_nb.core import write_json

TASK = 'diabetes-progression'
BIN = Path(sys.executable).parent

class ThreadServer:
    "uvicorn in a thread of the test process (so test-registered tasks are visible to it)."
    def __init__(self, app):
        import uvicorn
        self.port = free_port(); self.url = f'http://127.0.0.1:{self.port}'
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=self.port, log_level='error', access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        Client(self.url).wait_ready(120); return self

    def __exit__(self, *a):
        self.server.should_exit = True; self.thread.join(20)

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "A diabetes-progression model trained here (quick), registered in a temporary registry, with a predict and an admin key."
    from medmaas_nb.clinical import diabetes_candidates
    d = tmp_path_factory.mktemp('serving')
    t = get_task(TASK); ds = t.load(quick=True)
    X, y = ds['train']
    model = diabetes_candidates(quick=True)['ridge'].fit(X, y)
    save_model(model, d/'model')
    reg = Registry(d/'registry')
    mv = reg.register(TASK, d/'model', make_card(t, ds, {'quick': True}, {}, 'ridge'))
    keys = KeyStore(d/'keys.json')
    return {'dir': d, 'task': t, 'ds': ds, 'model': model, 'reg': reg, 'mv': mv, 'keys': keys,
            'key': keys.create('tester', 'predict'), 'admin': keys.create('boss', 'admin'), 'metrics': keys.create('scraper', 'metrics')}

@pytest.fixture(scope='module')
def server(env):
    from medmaas_nb.serving import create_app
    app = create_app(registry=env['reg'], keys=env['keys'], audit=AuditLog(env['dir']/'audit.jsonl', secret=b's' * 32), max_body_bytes=64 * 1024)
    with ThreadServer(app) as s: yield s

@pytest.fixture(scope='module')
def limited(env):
    "A second server with a tiny rate limit and CORS on for one origin."
    from medmaas_nb.serving import create_app
    app = create_app(registry=env['reg'], keys=env['keys'], audit=False, rate=0.5, burst=3, cors_origins=['https://ward.example'])
    with ThreadServer(app) as s: yield s

def H(key): return {'Authorization': f'Bearer {key}'}
def records(env, n=5): return env['task'].input_spec.to_records(env['ds']['test'][0].iloc[:n])

def test_health_needs_no_key_metrics_need_the_metrics_scope(server, env):
    assert httpx.get(server.url + '/v2/health/live').json() == {'live': True}
    assert httpx.get(server.url + '/v2/health/ready').status_code == 200
    assert httpx.get(server.url + '/metrics').status_code == 401            # metrics name every served model and version
    assert httpx.get(server.url + '/metrics', headers=H(env['key'])).status_code == 403
    for k in (env['metrics'], env['admin']):
        m = httpx.get(server.url + '/metrics', headers=H(k))
        assert m.status_code == 200 and 'medmaas_requests_total' in m.text and 'medmaas_request_seconds_bucket' in m.text
    spec = httpx.get(server.url + '/openapi.json').json()
    assert spec['info']['title'] == 'medmaas'
    assert spec['components']['securitySchemes']['bearer'] == {'type': 'http', 'scheme': 'bearer', 'description': 'an API key from `medmaas keys create NAME`'}
    assert spec['paths']['/v2/health/live']['get']['security'] == [] and spec['paths']['/metrics']['get']['security'] == [{'bearer': []}]
    from medmaas_nb.protocol import DATATYPES  # the spec lists every datatype the decoder accepts
    enum = spec['paths']['/v2/models/{name}/infer']['post']['requestBody']['content']['application/json']['schema']['properties']['inputs']['items']['properties']['datatype']['enum']
    assert enum == sorted(DATATYPES)

@pytest.mark.parametrize('path', ['/api/v1/models', f'/api/v1/models/{TASK}/card', '/v2', f'/v2/models/{TASK}'])
def test_missing_or_wrong_key_is_401(server, path):
    for h in ({}, H('mm_wrong'), {'Authorization': 'Basic abc'}):
        r = httpx.get(server.url + path, headers=h)
        assert r.status_code == 401 and 'API key' in r.json()['error'] and r.headers['www-authenticate'] == 'Bearer'

def test_prediction_routes_need_a_key_too(server, env):
    "The prediction routes take a fast lane past FastAPI's router: they must still refuse a missing or wrong key."
    rec = records(env, 1)
    v2 = {'inputs': [{'name': 'input', 'datatype': 'FP64', 'shape': [1, len(rec[0])], 'data': list(rec[0].values())}]}
    for path, body in ((f'/api/v1/models/{TASK}/predict', {'instances': rec}), (f'/v2/models/{TASK}/infer', v2),
                       (f'/v2/models/{TASK}/versions/1/infer', v2)):
        for h in ({}, H('mm_wrong')):
            r = httpx.post(server.url + path, json=body, headers=h)
            assert r.status_code == 401 and 'API key' in r.json()['error'], (path, r.status_code, r.text)

def test_a_version_pin_serves_that_version_not_the_newest(env, tmp_path):
    "Two versions registered: `TASK:1` serves version 1 (answers and metadata), unpinned serves `production`, else the newest."
    from medmaas_nb.serving import create_app
    from medmaas_nb.clinical import diabetes_candidates
    X, y = env['ds']['train']
    newer = diabetes_candidates(quick=True)['ridge'].fit(X, y * 0.5 + 40)  # a second model with other answers
    save_model(newer, tmp_path/'model2')
    reg = Registry(tmp_path/'registry'); card = env['mv'].card
    assert [reg.register(TASK, env['dir']/'model', card).version, reg.register(TASK, tmp_path/'model2', card).version] == [1, 2]
    rec = records(env, 3); Xr = env['task'].input_spec.validate(rec)
    want = {1: env['model'].predict(Xr), 2: newer.predict(Xr)}
    assert not np.allclose(want[1], want[2])
    def served(models):
        with ThreadServer(create_app(models, registry=reg, keys=env['keys'], audit=False)) as s:
            r = httpx.post(s.url + f'/api/v1/models/{TASK}/predict', json={'instances': rec}, headers=H(env['key'])).json()
            meta = httpx.get(s.url + f'/v2/models/{TASK}', headers=H(env['key'])).json()
            other = httpx.get(s.url + f'/v2/models/{TASK}/versions/{3 - r["version"]}/ready', headers=H(env['key'])).status_code
        assert np.allclose([p['prediction'] for p in r['predictions']], want[r['version']])
        assert meta['versions'] == [str(r['version'])] and other == 404  # the version not served is not reachable
        return r['version']
    assert served([f'{TASK}:1']) == 1
    assert served([TASK]) == 2  # no alias: the newest
    reg.set_alias(TASK, 'production', 1)
    assert served([TASK]) == 1 and served([f'{TASK}:2']) == 2

def test_scope_and_revocation(server, env):
    r = httpx.get(server.url + '/api/v1/keys', headers=H(env['key']))
    assert r.status_code == 403 and "needs 'admin'" in r.json()['error']
    ks = httpx.get(server.url + '/api/v1/keys', headers=H(env['admin'])).json()['keys']
    assert {k['name'] for k in ks} >= {'tester', 'boss'} and all('sha256' not in k for k in ks)
    tmp = env['keys'].create('temp'); time.sleep(0.02)
    assert httpx.get(server.url + '/api/v1/models', headers=H(tmp)).status_code == 200
    env['keys'].revoke('temp')
    assert httpx.get(server.url + '/api/v1/models', headers=H(tmp)).status_code == 401  # no restart needed

def test_predict_single_and_batch_equal_in_process(server, env):
    recs = records(env, 20)
    with Client(server.url, env['key'], timeout=300) as c:  # the first explanation imports SHAP: slow on a busy machine
        assert [m['task'] for m in c.models()] == [TASK]
        r = c.predict(TASK, recs)
        assert r['version'] == env['mv'].version and len(r['request_id']) == 16
        want = env['task'].predict(env['model'], env['ds']['test'][0].iloc[:20])
        assert np.allclose([p['prediction'] for p in r['predictions']], [p['prediction'] for p in want], rtol=1e-12)
        assert c.predict_one(TASK, recs[0])['prediction'] == pytest.approx(want[0]['prediction'], rel=1e-12)
        card = c.card(TASK)
        assert card['version'] == env['mv'].version and card['intended_use'] and card['input']['features'][0]['name'] == 'age'
        assert c.model(TASK)['input']['kind'] == 'tabular'
        ex = c.explain(TASK, recs[0])  # the task's own explanation (SHAP attributions) for that record
        assert 'bmi' in json.dumps(ex)

def test_explain_reads_its_background_from_the_card_never_the_data(env, tmp_path, monkeypatch):
    "The served explanation compares with the card's summary of the training patients; the data is never loaded."
    from medmaas_nb.serving import create_app
    t, mv = env['task'], env['mv']; bg = mv.card['served']['explanation']['background']
    assert 1 <= len(bg['records']) <= 20 and bg['patients'] == len(env['ds']['train'][0])
    train = {tuple(r) for r in env['ds']['train'][0].itertuples(index=False)}
    assert not any(tuple(r[n] for n in t.input_spec.names) in train for r in bg['records'])  # centres, not patients
    def no_data(*a, **k): raise AssertionError('the service loaded the training data')
    monkeypatch.setattr(t, 'load', no_data)
    B = t.input_spec.validate(bg['records']); w = np.array(bg['weights']) / sum(bg['weights'])
    with ThreadServer(create_app(registry=env['reg'], keys=env['keys'], audit=False)) as s, Client(s.url, env['key'], timeout=300) as c:
        rec = records(env, 1)[0]; ex = c.explain(TASK, rec)
        e = ex['explanations'][0] if 'explanations' in ex else ex
        assert e['baseline'] == pytest.approx(float(t.scores(env['model'], B) @ w), rel=1e-9)
        assert e['baseline'] + sum(e['attributions'].values()) == pytest.approx(e['prediction'], rel=1e-9)
        assert 'k-means centres' in e['method']
    # a version whose card has no background is not explained from the data either: a clear 404
    reg = Registry(tmp_path/'registry')
    card = make_card(t, env['ds'], {'quick': True}, {}, 'ridge'); card['served']['explanation'] = {}
    reg.register(TASK, env['dir']/'model', card)
    with ThreadServer(create_app(registry=reg, keys=env['keys'], audit=False)) as s, Client(s.url, env['key'], timeout=300) as c:
        with pytest.raises(ServiceError) as err: c.explain(TASK, records(env, 1)[0])
        assert err.value.status == 404 and 'registered without an explanation background' in err.value.message

def test_v2_metadata_and_infer_equal_in_process(server, env):
    X = env['ds']['test'][0].iloc[:7]
    with Client(server.url, env['key']) as c:
        meta = c.v2_metadata(TASK)
        assert meta['inputs'] == [{'name': 'input', 'datatype': 'FP64', 'shape': [-1, 10]}]
        assert meta['outputs'] == [{'name': 'prediction', 'datatype': 'FP64', 'shape': [-1]}]
        assert meta['versions'] == [str(env['mv'].version)] and meta['platform'] == 'sklearn'
        for v in (None, env['mv'].version):
            out = c.v2_infer(TASK, env['task'].input_spec.to_v2(X), version=v)
            assert np.allclose(out['prediction'], env['task'].scores(env['model'], X), rtol=1e-12)
    srv = httpx.get(server.url + '/v2', headers=H(env['key'])).json()
    assert srv['name'] == 'medmaas' and 'binary_tensor_data' in srv['extensions']
    r = httpx.post(server.url + f'/v2/models/{TASK}/infer', headers=H(env['key']),
                   json={'id': 'abc', 'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': [1, 10], 'data': [[50, 1, 25, 90, 180, 100, 50, 4, 4.5, 90]]}],
                         'outputs': [{'name': 'prediction'}]})
    assert r.status_code == 200 and r.json()['id'] == 'abc' and r.json()['model_version'] == str(env['mv'].version)

ROW = [50, 1, 25, 90, 180, 100, 50, 4, 4.5, 90]
GOOD = {'age': 50, 'sex': 1, 'bmi': 25, 'bp': 90, 's1': 180, 's2': 100, 's3': 50, 's4': 4, 's5': 4.5, 's6': 90}
def v2(data, shape=(1, 10), dt='FP64', name='input'): return json.dumps({'inputs': [{'name': name, 'datatype': dt, 'shape': list(shape), 'data': data}]})
API, INFER = f'/api/v1/models/{TASK}/predict', f'/v2/models/{TASK}/infer'
BAD = [  # (path, body, status, fragment of the message)
    (API, '{"instance": {', 400, 'not valid JSON'),
    (API, '', 400, 'empty'),
    (API, '[1, 2]', 400, "'instances'"),
    (API, '{"instances": []}', 400, 'non-empty list'),
    (API, json.dumps({'instance': {**GOOD, 'age': 1e9}}), 400, "'age' = 1e+09 is out of range"),
    (API, json.dumps({'instance': {k: v for k, v in GOOD.items() if k != 'bmi'}}), 400, "'bmi' is missing"),
    (API, json.dumps({'instance': {**GOOD, 'weight': 80}}), 400, "unknown field(s) ['weight']"),
    (API, json.dumps({'instance': {**GOOD, 'age': 'old'}}), 400, "'age' must be a number"),
    (API, json.dumps({'instance': {**GOOD, 'sex': 3}}), 400, "'sex' is 3"),
    (API, '{"instance": {"age": NaN, "sex": 1, "bmi": 25, "bp": 90, "s1": 180, "s2": 100, "s3": 50, "s4": 4, "s5": 4.5, "s6": 90}}', 400, "'age'"),
    (API, '{"instance": {"age": 50, "sex": 1, "bmi": Infinity, "bp": 90, "s1": 180, "s2": 100, "s3": 50, "s4": 4, "s5": 4.5, "s6": 90}}', 400, "'bmi' is inf"),
    (API, json.dumps({'instance': GOOD, 'extra': 1}), 400, "one key"),
    (INFER, v2(ROW, (1, 9)), 400, 'needs 9 values, got 10'),
    (INFER, v2(ROW[:9], (1, 9)), 400, "shape [1, 9]; expected [-1, 10]"),
    (INFER, v2(ROW, (10,)), 400, 'expected [-1, 10]'),
    (INFER, v2([str(v) for v in ROW], dt='BYTES'), 400, 'datatype BYTES; expected FP64'),
    (INFER, v2(ROW, dt='FP128'), 400, 'unknown datatype'),
    (INFER, v2(ROW, name='x'), 400, "missing ['input']"),
    (INFER, v2(['a'] * 10), 400, 'must be numbers'),
    (INFER, v2(ROW[:-1] + [float('nan')]).replace('NaN', 'NaN'), 400, "'s6'"),
    (INFER, v2(ROW[:-1] + [1e999]), 400, "'s6' is inf"),
    (INFER, '{"inputs": "x"}', 400, "'inputs'"),
    ('/api/v1/models/no-such/predict', json.dumps({'instance': GOOD}), 404, "No model 'no-such'"),
    ('/v2/models/no-such/infer', v2(ROW), 404, "No model 'no-such'"),
    (f'/v2/models/{TASK}/versions/99/infer', v2(ROW), 404, "version '99' is not served"),
    (f'/v2/models/{TASK}/versions/abc/infer', v2(ROW), 404, "version 'abc' is not served"),
    ('/api/v1/nothing-here', '{}', 404, 'Not Found'),
    (API, json.dumps({'instances': [GOOD] * 3000}), 413, 'over the limit'),
]

@pytest.mark.parametrize('path,body,status,fragment', BAD, ids=[f'{i}-{b[2]}' for i, b in enumerate(BAD)])
def test_bad_requests_get_a_clear_4xx_and_the_service_keeps_serving(server, env, path, body, status, fragment):
    r = httpx.post(server.url + path, content=body, headers={**H(env['key']), 'Content-Type': 'application/json'})
    assert r.status_code == status, r.text
    e = r.json()
    assert fragment in e['error'], e
    assert 'Traceback' not in r.text and 'File "' not in r.text and len(e['error']) < 400  # no stack trace, no schema dump
    assert e['request_id'] == r.headers['x-request-id']
    ok = httpx.post(server.url + API, json={'instance': GOOD}, headers=H(env['key']))
    assert ok.status_code == 200

def test_chunked_oversized_body_is_413(server, env):
    def chunks():
        for _ in range(100): yield b' ' * 1024
    r = httpx.post(server.url + API, content=chunks(), headers=H(env['key']))
    assert r.status_code == 413 and 'over the limit' in r.json()['error']

def test_rate_limit_answers_429_per_key(limited, env):
    codes = [httpx.get(limited.url + '/api/v1/models', headers=H(env['key'])).status_code for _ in range(5)]
    assert codes[:3] == [200] * 3 and codes[-1] == 429
    r = httpx.get(limited.url + '/api/v1/models', headers=H(env['key']))
    assert r.status_code == 429 and int(r.headers['retry-after']) >= 1 and 'Rate limit' in r.json()['error']
    assert httpx.get(limited.url + '/api/v1/models', headers=H(env['admin'])).status_code == 200  # other keys unaffected

def test_cors_is_off_by_default_and_configurable(server, limited, env):
    h = {**H(env['key']), 'Origin': 'https://ward.example'}
    assert 'access-control-allow-origin' not in httpx.get(server.url + '/api/v1/models', headers=h).headers
    assert httpx.get(limited.url + '/v2/health/live', headers=h).headers['access-control-allow-origin'] == 'https://ward.example'

def test_audit_log_has_a_keyed_digest_of_the_input_never_the_input(server, env):
    import hmac
    body = json.dumps({'instance': {**GOOD, 'age': 61.5}}).encode()
    r = httpx.post(server.url + API, content=body, headers=H(env['key']))
    time.sleep(0.05)
    log = env['dir']/'audit.jsonl'
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    rec = next(l for l in lines if l['request_id'] == r.headers['x-request-id'])
    assert rec['key'] == 'tester' and rec['model'] == TASK and rec['version'] == env['mv'].version and rec['status'] == 200
    assert rec['client'] == '127.0.0.1' and rec['latency_ms'] > 0
    assert rec['input_hmac'] == hmac.new(b's' * 32, body, hashlib.sha256).hexdigest()  # under the server secret...
    assert hashlib.sha256(body).hexdigest() not in log.read_text()                    # ...not a hash anyone can recompute
    assert '61.5' not in log.read_text() and log.stat().st_mode & 0o777 == 0o600

def test_metrics_count_requests_and_errors_by_model_and_status(server, env):
    httpx.post(server.url + API, content='{', headers=H(env['key']))
    m = httpx.get(server.url + '/metrics', headers=H(env['metrics'])).text
    assert f'medmaas_requests_total{{model="{TASK}",route="/api/v1/models/{{task}}/predict",status="200"}}' in m
    assert 'medmaas_errors_total{error="InvalidInput",model="diabetes-progression"' in m

def test_official_triton_v2_client_unmodified(server, env):
    tc = require_module('tritonclient.http')
    X = env['ds']['test'][0].iloc[:4]
    hd = H(env['key'])
    c = tc.InferenceServerClient(url=server.url.replace('http://', ''))
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(TASK, headers=hd)
    meta = c.get_model_metadata(TASK, headers=hd)
    assert meta['inputs'][0]['name'] == 'input'
    want = env['task'].scores(env['model'], X)
    for binary in (True, False):  # Triton's client sends raw binary tensors by default
        inp = tc.InferInput('input', [4, 10], 'FP64'); inp.set_data_from_numpy(X.to_numpy(dtype=np.float64), binary_data=binary)
        res = c.infer(TASK, [inp], headers=dict(hd),  # (the client adds its own headers to the dict it gets)
                       outputs=[tc.InferRequestedOutput('prediction', binary_data=binary)])
        assert np.allclose(res.as_numpy('prediction'), want, rtol=1e-12)
        assert ('binary_data_size' in res.get_output('prediction').get('parameters', {})) == binary  # the output came as asked
    res = c.infer(TASK, [inp], headers=dict(hd))  # no outputs named: the client asks for all of them in binary
    assert res.get_output('prediction')['parameters']['binary_data_size'] == 4 * 8 and np.allclose(res.as_numpy('prediction'), want, rtol=1e-12)
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match='expected \\[-1, 10\\]'):
        bad = tc.InferInput('input', [4, 9], 'FP64'); bad.set_data_from_numpy(X.iloc[:, :9].to_numpy(dtype=np.float64))
        c.infer(TASK, [bad], headers=dict(hd))
    c.close()

def test_openapi_fuzzing_finds_no_server_errors(server, env, tmp_path):
    "Property-based fuzzing of every operation in the OpenAPI spec (schemathesis): no 5xx, whatever the input."
    cfg = tmp_path/'schemathesis.toml'
    cfg.write_text(f'[parameters]\n"path.task" = "{TASK}"\n"path.name" = "{TASK}"\n"path.version" = "{env["mv"].version}"\n')
    r = subprocess.run([str(BIN/'schemathesis'), '--config-file', str(cfg), 'run', server.url + '/openapi.json',
                        '--checks', 'not_a_server_error', '--max-examples', '25', '--seed', '1', '--phases', 'examples,fuzzing',
                        '-H', f"Authorization: Bearer {env['admin']}", '--request-timeout', '10', '--no-color'],
                       capture_output=True, text=True, timeout=300)
    print(r.stdout[-2500:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert 'Fuzzing' in r.stdout and ' passed' in r.stdout and 'Tested: 0' not in r.stdout  # it really ran
    assert httpx.get(server.url + '/v2/health/ready').status_code == 200

# --- the Keras runtime: dynamic batching, with a tiny model trained here and a task registered here ---

@pytest.fixture(scope='module')
def keras_server(tmp_path_factory):
    from medmaas_nb.core import keras
    from medmaas_nb.tasks import Task, InputSpec, Feature, register_task
    from medmaas_nb.data import Dataset
    from medmaas_nb.serving import create_app
    K = keras(); K.utils.set_random_seed(0)
    rng = np.random.default_rng(0); X = rng.normal(size=(200, 4)); y = (X[:, 0] + X[:, 1] > 0).astype(int)
    inp = K.Input((4,))  # the functional API, as the project's networks: the registry allows only their classes (KERAS_TYPES)
    m = K.Model(inp, K.layers.Dense(1, activation='sigmoid')(K.layers.Dense(8, activation='relu')(inp)))
    m.compile('adam', 'binary_crossentropy'); m.fit(X, y, epochs=2, verbose=0)
    names = ['a', 'b', 'c', 'd']
    spec = InputSpec('tabular', [Feature(n, min=-10, max=10) for n in names])
    task = register_task(Task('test-keras-binary', 'clinical', 'binary', 'none', 'test-only Keras model', load=lambda **k: None,
                              input_spec=spec, primary_metric='roc_auc', runtime='keras', output_names=['no', 'yes'],
                              score_fn=lambda model, X: model(np.asarray(X, dtype='float32'), training=False).numpy()[:, 0].astype(float)))
    d = tmp_path_factory.mktemp('keras')
    save_model(m, d/'model', 'keras')
    reg = Registry(d/'registry'); reg.register(task.name, d/'model', {'task': task.name, 'model': {'runtime': 'keras'}})
    keys = KeyStore(d/'keys.json'); key = keys.create('k', 'admin')
    app = create_app(['test-keras-binary'], registry=reg, keys=keys, audit=False, max_batch=64, max_wait_ms=30)
    with ThreadServer(app) as s: yield s, key, task, m, X, names, app.state.models.get(task.name)

class HeldBatcher:
    """Make a batcher's first model call wait until all `total` inputs have arrived (the rest queued behind it), so how requests
    batch no longer depends on timing; `first` is the size of that first call. A context manager: restores the batcher after."""
    def __init__(self, batcher, total:int, timeout:float=30):
        self.batcher, self.total, self.timeout, self.first = batcher, total, timeout, None
    def __enter__(self):
        b, fn = self.batcher, self.batcher.fn
        def gated(X):
            if self.first is None:
                self.first = len(X); t0 = time.monotonic()
                while self.first + len(b._q) < self.total and time.monotonic() - t0 < self.timeout: time.sleep(0.002)
            return fn(X)
        self.fn, b.fn = fn, gated
        return self
    def __exit__(self, *a): self.batcher.fn = self.fn

def batch_metrics(url, key)->tuple[float, float, str]:
    m = httpx.get(url + '/metrics', headers={'Authorization': f'Bearer {key}'}).text
    line = lambda *parts: float(next((l for l in m.splitlines() if all(p in l for p in parts)), '_ 0').split()[-1])  # 0 before any batch
    return line('medmaas_batch_size_count'), line('medmaas_batch_size_sum'), m

def test_keras_runtime_batches_concurrent_requests(keras_server):
    "24 requests at once: while the first model call runs (held open), the others queue, then share one model call."
    s, key, task, model, X, names, rt = keras_server
    recs = task.input_spec.to_records(__import__('pandas').DataFrame(X[:24], columns=names))
    with Client(s.url, key) as c0: assert c0.model(task.name)['kind'] == 'binary'
    calls0, inputs0, _ = batch_metrics(s.url, key)
    def one(r):
        with Client(s.url, key) as c: return c.predict_one(task.name, r)['probability']
    with HeldBatcher(rt._b_predict, 24) as held, ThreadPoolExecutor(24) as ex: got = list(ex.map(one, recs))
    want = np.concatenate([task.scores(model, X[i:i + 1]) for i in range(24)])  # one at a time, in process
    assert np.allclose(got, want, atol=1e-6)
    calls, inputs, _ = batch_metrics(s.url, key)
    # the first call, then one for all the others; on a busy machine all 24 may already be queued when the first call
    # starts, and then one call takes them all: either way 24 requests cost at most 2 model calls
    assert 1 <= held.first <= 24 and (calls - calls0, inputs - inputs0) == (1 if held.first == 24 else 2, 24)
    with Client(s.url, key) as c:
        out = c.v2_infer(task.name, task.input_spec.to_v2(__import__('pandas').DataFrame(X[:5], columns=names)))
        assert np.allclose(out['probability'], want[:5], atol=1e-6)

# --- the command line ---

def test_cli_keys_and_serve_start_fast_without_tensorflow(env, tmp_path):
    e = {**os.environ, 'MEDMAAS_REGISTRY_DIR': str(env['reg'].root), 'MLFLOW_TRACKING_URI': env['reg'].tracking_uri, 'MEDMAAS_KEYS_FILE': str(tmp_path/'keys.json'),
         'MEDMAAS_AUDIT_LOG': str(tmp_path/'audit.jsonl')}
    run = lambda *a: subprocess.run([str(BIN/'medmaas'), *a], capture_output=True, text=True, env=e, timeout=120)
    r = run('keys', 'create', 'app1', '--scope', 'predict'); key = r.stdout.strip()
    assert r.returncode == 0 and key.startswith('mm_') and 'shown only this once' in r.stderr
    assert key not in (tmp_path/'keys.json').read_text()
    ls = run('keys', 'list').stdout
    assert 'app1' in ls and 'predict' in ls
    with ServiceProcess([TASK], env=e) as sp:
        with sp.client(key) as c: assert c.predict_one(TASK, GOOD)['prediction'] > 0
    assert run('keys', 'revoke', 'app1').returncode == 0 and 'app1' not in run('keys', 'list').stdout
    assert run('serve', '--models', 'no-such-task').returncode == 2
    r = run('serve', '--models', f'{TASK}:1', '--wait-for', str(tmp_path/'registration.json'))  # a pinned version cannot wait
    assert r.returncode == 2 and 'exactly one task without a version' in r.stderr and 'Traceback' not in r.stderr
    # a service of scikit-learn models never imports TensorFlow, nor other heavy libraries or the other families' modules
    heavy = ['tensorflow', 'keras', 'mlflow', 'shap', 'matplotlib', 'papermill', 'ipywidgets', 'medmaas_nb.imaging', 'medmaas_nb.imaging_networks', 'medmaas_nb.gradcam', 'medmaas_nb.imaging_tasks', 'medmaas_nb.genomics', 'medmaas_nb.expression', 'medmaas_nb.text']
    code = ('import sys; from medmaas_nb.serving import create_app, ModelSet; from medmaas_nb.registry import Registry; '
            f'ModelSet(registry=Registry({str(env["reg"].root)!r})).load(); create_app(registry=Registry({str(env["reg"].root)!r})); '
            f'bad = [m for m in {heavy!r} if m in sys.modules]; assert not bad, f"imported {{bad}}"')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=e, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]

def test_run_service_waits_for_the_registration_and_is_adopted(env, tmp_path, monkeypatch):
    "A pipeline run's service: started before the model exists, it serves the version the run registers; the serve step adopts it."
    monkeypatch.setenv('MEDMAAS_REGISTRY_DIR', str(env['reg'].root)); monkeypatch.setenv('MLFLOW_TRACKING_URI', env['reg'].tracking_uri)
    run_dir = tmp_path/'run'; run_dir.mkdir()
    early = ServiceProcess.for_run(run_dir, TASK)  # as the runner does, with the first step
    try:
        assert early.proc.poll() is None and (run_dir/'service'/'prestarted.json').exists()
        write_json(run_dir/'registration.json', {'task': TASK, 'version': env['mv'].version})  # the evaluate step
        adopted = ServiceProcess.for_run(run_dir, TASK, env['mv'].version)  # the serve step
        assert adopted.prestarted and adopted.url == early.url
        key = KeyStore(run_dir/'service'/'keys.json').create('serve-step', 'predict')  # created after the service started
        with adopted.wait().client(key) as c:
            assert [(m['task'], m['version']) for m in c.models()] == [(TASK, env['mv'].version)]
            assert c.predict_one(TASK, GOOD)['prediction'] > 0
        if os.geteuid() == 0 and Path(f'/proc/{early.proc.pid}/task').is_dir():  # low priority only while it prepared
            nice = lambda tid: int(Path(f'/proc/{early.proc.pid}/task/{tid}/stat').read_text().rsplit(')', 1)[1].split()[16])
            assert {nice(t.name) for t in Path(f'/proc/{early.proc.pid}/task').iterdir()} == {os.getpriority(os.PRIO_PROCESS, 0)}
        adopted.stop()
        assert early.proc.wait(10) is not None and adopted.proc.poll() is not None
    finally: early.stop()
    # run on its own (no service started with the run), the serve step launches one for the pinned version
    alone = tmp_path/'alone'; alone.mkdir()
    sp = ServiceProcess.for_run(alone, TASK, env['mv'].version)
    try:
        assert not sp.prestarted and '--wait-for' not in sp.proc.args
        key = KeyStore(alone/'service'/'keys.json').create('serve-step', 'predict')
        with sp.wait().client(key) as c: assert c.predict_one(TASK, GOOD)['prediction'] > 0
    finally: sp.stop()

def test_keras_runtime_counts_test_time_views_in_its_batch(tmp_path):
    "An image model with ten test-time views inside takes 32 // 10 = 3 images per model call, and answers as in process."
    from medmaas_nb.imaging_networks import build_member, build_served
    from medmaas_nb.serving import create_app
    T = get_task('breast-ultrasound')
    model = build_served('small_resnet', [build_member('small_resnet', f's{i}_', width=4) for i in range(2)], 0.5, width=4, tta='flipshift')
    save_model(model, tmp_path/'model', 'keras')
    reg = Registry(tmp_path/'registry'); reg.register(T.name, tmp_path/'model', {'task': T.name, 'model': {'runtime': 'keras'}})
    keys = KeyStore(tmp_path/'keys.json'); key = keys.create('k', 'admin')
    app = create_app([T.name], registry=reg, keys=keys, audit=False, max_batch=32, max_wait_ms=30)
    X = np.random.default_rng(0).random((12, 28, 28, 1)).astype('float32')
    recs = T.input_spec.to_records(X)
    with ThreadServer(app) as s:
        rt = app.state.models.get(T.name)
        assert (rt.max_batch, rt.network_batch) == (3, 32)
        def one(r):
            with Client(s.url, key) as c: return c.predict_one(T.name, r)['probability']
        with HeldBatcher(rt._b_predict, 12) as held, ThreadPoolExecutor(12) as ex: got = list(ex.map(one, recs))
        calls, inputs, m = batch_metrics(s.url, key)
    # the first call (at most 3 images), then the others, queued behind it, 3 at a time; none over 3 images
    assert 1 <= held.first <= 3 and (calls, inputs) == (1 + -(-(12 - held.first) // 3), 12), (held.first, calls, inputs)
    assert float(next(l for l in m.splitlines() if 'medmaas_batch_size_bucket' in l and 'le="4.0"' in l).split()[-1]) == calls
    # in process, each image in a call of exactly three (itself and two copies, as a short call is padded): the same answers
    X32 = np.asarray(T.input_spec.validate(recs), dtype='float32')
    want = np.array([T.scores(model, np.repeat(X32[i:i + 1], 3, axis=0))[0] for i in range(12)])
    assert np.allclose(got, want, atol=1e-6)

# --- molecule-solubility: a SMILES string in; a prediction with its interval and applicability-domain flag out ---

MOL = 'molecule-solubility'

def _api_post(name:str):
    "A function (server, key, body, route='predict') that posts to task `name`'s plain JSON API."
    return lambda s, key, body, route='predict': httpx.post(s.url + f'/api/v1/models/{name}/{route}', json=body, headers=H(key), timeout=120)

def _quick_service(tmp_path_factory, name:str, user:str, audit:bool=True):
    "A quick model of `name` trained here, registered in a temporary registry, served by uvicorn: (server, key, task, model, ds, folder)."
    from conftest import require_data
    from medmaas_nb.tasks import fit_task
    from medmaas_nb.serving import create_app
    t = get_task(name); require_data(t.dataset)
    ds = t.load(quick=True); res = fit_task(t, ds, quick=True)
    d = tmp_path_factory.mktemp(name)
    save_model(res.model, d/'model', t.runtime)
    reg = Registry(d/'registry'); reg.register(name, d/'model', make_card(t, ds, {'quick': True}, {}, res.chosen))
    keys = KeyStore(d/'keys.json'); key = keys.create(user, 'predict')
    app = create_app([name], registry=reg, keys=keys, audit=AuditLog(d/'audit.jsonl', secret=b'q' * 32) if audit else False)
    with ThreadServer(app) as s: yield s, key, t, reg.get(name).load(), ds, d

@pytest.fixture(scope='module')
def molecule_server(tmp_path_factory):
    "A quick molecule-solubility model trained here, registered in a temporary registry, served by a real uvicorn server."
    yield from _quick_service(tmp_path_factory, MOL, 'chemist')

_mol_post = _api_post(MOL)

def test_molecule_prediction_has_an_interval_and_a_domain_flag(molecule_server):
    s, key, t, model, ds, d = molecule_server
    r = _mol_post(s, key, {'instances': [{'smiles': 'OC1=CC=CC=C1'}, {'smiles': 'O=C(O)[C@@H]1CCCN1C(=O)[C@@H](N)CCCCN'}]})
    assert r.status_code == 200, r.text
    p = r.json()['predictions']
    want = t.predict(model, np.array(['Oc1ccccc1', 'O=C(O)[C@@H]1CCCN1C(=O)[C@@H](N)CCCCN'], dtype=object))
    assert [q['prediction'] for q in p] == pytest.approx([w['prediction'] for w in want], rel=1e-9)
    for q in p:
        iv, ad = q['interval'], q['applicability_domain']
        assert iv['low'] < q['prediction'] < iv['high'] and iv['level'] == pytest.approx(0.9)
        assert iv['high'] - iv['low'] == pytest.approx(2 * model.q_)
        assert 0 <= ad['nearest_similarity'] <= 1 and ad['in_domain'] == (ad['nearest_similarity'] >= ad['cutoff'])
    assert p[0]['applicability_domain']['in_domain'] and not p[1]['applicability_domain']['in_domain']  # phenol vs a dipeptide (Lys-Pro)
    # the v2 protocol: one BYTES tensor of SMILES in; the prediction, the interval's ends, the similarity and the domain flag back
    v2 = {'inputs': [{'name': 'smiles', 'datatype': 'BYTES', 'shape': [1], 'data': ['c1ccccc1O']}]}
    r = httpx.post(s.url + f'/v2/models/{MOL}/infer', json=v2, headers=H(key), timeout=60)
    assert r.status_code == 200, r.text
    outs = {o['name']: o for o in r.json()['outputs']}
    assert list(outs) == ['prediction', 'interval_low', 'interval_high', 'nearest_similarity', 'in_domain']
    assert outs['prediction']['data'][0] == pytest.approx(p[0]['prediction'], rel=1e-9)
    assert outs['interval_low']['data'][0] == pytest.approx(p[0]['interval']['low'], rel=1e-9)
    assert outs['interval_high']['data'][0] == pytest.approx(p[0]['interval']['high'], rel=1e-9)
    assert outs['nearest_similarity']['data'][0] == pytest.approx(p[0]['applicability_domain']['nearest_similarity'], abs=1e-4)
    assert outs['in_domain']['datatype'] == 'BOOL' and outs['in_domain']['data'] == [True]
    v2['outputs'] = [{'name': 'in_domain'}]  # a client may ask for one output
    r = httpx.post(s.url + f'/v2/models/{MOL}/infer', json=v2, headers=H(key), timeout=60)
    assert [o['name'] for o in r.json()['outputs']] == ['in_domain'], r.text
    meta = httpx.get(s.url + f'/v2/models/{MOL}', headers=H(key), timeout=60).json()
    assert [(o['name'], o['datatype']) for o in meta['outputs']] == [('prediction', 'FP64'), ('interval_low', 'FP64'), ('interval_high', 'FP64'),
                                                                    ('nearest_similarity', 'FP64'), ('in_domain', 'BOOL')]

@pytest.mark.parametrize('smiles,fragment', [('C1CC(', 'syntax error'), ('C1CC', 'unclosed ring'), ('CN(C)(C)(C)C', 'valence'),
                                             ('C' * 301, 'at most 300'), ('CC O', 'without spaces'), ('', 'empty'), (42, 'must be a string')])
def test_molecule_bad_smiles_is_a_400_naming_the_field(molecule_server, smiles, fragment):
    s, key, t, model, ds, d = molecule_server
    r = _mol_post(s, key, {'instances': ['CCO', {'smiles': smiles}]})
    assert r.status_code == 400, r.text
    e = r.json()
    assert e['field'] == 'instances[1].smiles' and fragment in e['error'] and 'Record 1' in e['error'], e
    assert 'Traceback' not in r.text and (not isinstance(smiles, str) or len(smiles) < 4 or smiles not in e['error'])
    assert _mol_post(s, key, {'instance': {'smiles': 'CCO'}}).status_code == 200  # and the service keeps serving
    time.sleep(0.05)
    if isinstance(smiles, str) and len(smiles) > 3: assert smiles not in (d/'audit.jsonl').read_text()  # the audit log never holds the input

def test_molecule_explanation_is_atom_contributions_drawn_as_png(molecule_server):
    import base64
    s, key, t, model, ds, d = molecule_server
    r = _mol_post(s, key, {'instance': {'smiles': 'Oc1ccccc1Cl'}}, 'explain')
    assert r.status_code == 200, r.text
    e = r.json()['explanations'][0]
    assert e['method'] == 'leave-one-atom-out' and [a['symbol'] for a in e['atom_contributions']] == ['O', 'C', 'C', 'C', 'C', 'C', 'C', 'Cl']
    assert base64.b64decode(e['image_png_base64'])[:4] == b'\x89PNG'

# --- blood-cell-detection: a JPEG or PNG blood-smear image in; boxes, scores and counts out ---

DET = 'blood-cell-detection'

@pytest.fixture(scope='module')
def detection_server(tmp_path_factory):
    "A quick blood-cell-detection model trained here, registered in a temporary registry, served by a real uvicorn server."
    yield from _quick_service(tmp_path_factory, DET, 'lab')

_det_post = _api_post(DET)

def test_detection_image_gets_boxes_and_counts(detection_server):
    import base64
    s, key, t, model, ds, d = detection_server
    jpeg = ds['test'][0][0]
    r = _det_post(s, key, {'instances': [{'image': {'b64': base64.b64encode(jpeg).decode()}}]})
    assert r.status_code == 200, r.text
    p = r.json()['predictions'][0]
    want = t.predict(model, t.input_spec.validate([jpeg]))[0]
    assert p['counts'] == want['counts'] and set(p['counts']) == {'RBC', 'WBC', 'Platelets'}
    assert len(p['boxes']) == sum(p['counts'].values()) == len(want['boxes'])
    for b in p['boxes']:
        assert b['class'] in p['counts'] and b['score'] >= p['score_threshold']
        assert 0 <= b['box']['x_min'] <= b['box']['x_max'] <= 640 and 0 <= b['box']['y_min'] <= b['box']['y_max'] <= 480
    # v2: one BYTES tensor of base64 files in; the counts (the task's scores) out, then the boxes in the layout of the
    # TensorFlow Object Detection API: padded to 100 per image, class -1 and score 0 where there is none
    v2 = {'inputs': [{'name': 'image', 'datatype': 'BYTES', 'shape': [1], 'data': [base64.b64encode(jpeg).decode()]}]}
    r = httpx.post(s.url + f'/v2/models/{DET}/infer', json=v2, headers=H(key), timeout=120)
    assert r.status_code == 200, r.text
    outs = {o['name']: o for o in r.json()['outputs']}
    assert list(outs) == [outs_name := r.json()['outputs'][0]['name'], 'num_detections', 'detection_boxes', 'detection_scores', 'detection_classes']
    assert outs[outs_name]['data'] == [float(p['counts'][c]) for c in ('RBC', 'WBC', 'Platelets')]
    n = len(p['boxes']); assert outs['num_detections']['data'] == [n] and outs['num_detections']['datatype'] == 'INT64'
    assert outs['detection_boxes']['shape'] == [1, 100, 4] and outs['detection_scores']['shape'] == [1, 100]
    boxes, scores, classes = (np.array(outs[k]['data']).reshape(outs[k]['shape'])[0] for k in ('detection_boxes', 'detection_scores', 'detection_classes'))
    names = ['RBC', 'WBC', 'Platelets']
    assert [names[c] for c in classes[:n]] == [b['class'] for b in p['boxes']] and (classes[n:] == -1).all() and (scores[n:] == 0).all()
    assert np.allclose(scores[:n], [b['score'] for b in p['boxes']], atol=1e-4)
    assert np.allclose(boxes[:n], [[b['box'][k] for k in ('x_min', 'y_min', 'x_max', 'y_max')] for b in p['boxes']], atol=0.06)
    meta = httpx.get(s.url + f'/v2/models/{DET}', headers=H(key), timeout=60).json()
    assert [(o['name'], o['datatype'], o['shape']) for o in meta['outputs'][1:]] == [
        ('num_detections', 'INT64', [-1]), ('detection_boxes', 'FP32', [-1, 100, 4]), ('detection_scores', 'FP32', [-1, 100]), ('detection_classes', 'INT64', [-1, 100])]

def _png(a):
    from medmaas_nb.detection import encode_image
    return encode_image(a)

@pytest.mark.parametrize('make,fragment', [
    (lambda: b'GIF89a' + b'\0' * 100, 'neither a JPEG nor a PNG'),
    (lambda: _png(np.zeros((48, 64, 3), np.uint8)), 'expected 640 x 480'),
    (lambda: _png(np.zeros((480, 640, 3), np.uint8))[:300], 'truncated or corrupt'),
    (lambda: 'bm90IGFuIGltYWdl', 'neither a JPEG nor a PNG'),   # base64 of 'not an image'
    (lambda: '***', 'base64'),
    (lambda: 12, 'base64 text')])
def test_detection_bad_image_is_a_400_naming_the_field(detection_server, make, fragment):
    import base64
    s, key, t, model, ds, d = detection_server
    x = make(); x = base64.b64encode(x).decode() if isinstance(x, bytes) else x
    r = _det_post(s, key, {'instances': [{'image': {'b64': base64.b64encode(ds['test'][0][0]).decode()}}, {'image': x}]})
    assert r.status_code == 400, r.text
    e = r.json()
    assert e['field'] == 'instances[1].image' and fragment in e['error'], e
    assert 'Traceback' not in r.text

def test_detection_decompression_bomb_is_refused_from_its_header(detection_server):
    "A PNG of a few kB whose header declares 30,000 x 30,000 pixels: a 400 at once, nothing decoded, the service still serving."
    import base64, struct, zlib
    s, key, t, model, ds, d = detection_server
    chunk = lambda k, b: struct.pack('>I', len(b)) + k + b + struct.pack('>I', zlib.crc32(k + b) & 0xffffffff)
    bomb = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 30000, 30000, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(b'\0' * 90001 * 8)) + chunk(b'IEND', b'')
    t0 = time.perf_counter()
    r = _det_post(s, key, {'instance': {'image': {'b64': base64.b64encode(bomb).decode()}}})
    assert r.status_code == 400 and r.json()['field'] == 'instances[0].image' and 'pixels' in r.json()['error'], r.text
    assert time.perf_counter() - t0 < 5
    assert _det_post(s, key, {'instance': {'image': {'b64': base64.b64encode(ds['test'][0][0]).decode()}}}).status_code == 200

def test_detection_explanation_is_the_image_with_boxes(detection_server):
    import base64, io
    from PIL import Image
    s, key, t, model, ds, d = detection_server
    r = _det_post(s, key, {'instance': {'image': {'b64': base64.b64encode(ds['test'][0][0]).decode()}}}, 'explain')
    assert r.status_code == 200, r.text
    e = r.json()['explanations'][0]
    png = base64.b64decode(e['image_png_base64'])
    assert png[:4] == b'\x89PNG' and Image.open(io.BytesIO(png)).size == (640, 480)
    assert set(e['counts']) == {'RBC', 'WBC', 'Platelets'}
    assert base64.b64encode(ds['test'][0][0]).decode()[:200] not in (d/'audit.jsonl').read_text()  # the audit log never holds the image

def test_molecule_graph_network_average_is_registered_and_served(tmp_path):
    "The graph network (trained in Keras, saved in the scikit-learn model as NumPy weights) averaged with boosting: registered and served."
    from conftest import require_data
    require_data('esol'); require_module('tensorflow')
    from medmaas_nb.molecules import SolubilityModel, AveragedRegressor, solubility_candidates, fit_regressor
    from medmaas_nb.molecule_graphs import GraphNetRegressor
    from medmaas_nb.serving import create_app
    t = get_task(MOL); ds = t.load(quick=True); (X, y), (Xv, yv) = ds['train'], ds['val']
    gnn = fit_regressor(GraphNetRegressor(width=16, rounds=2, epochs=2), X, y, Xv, yv)
    gb = fit_regressor(solubility_candidates(quick=True)['gradient_boosting'], X, y)
    model = SolubilityModel(AveragedRegressor([('gradient_boosting', gb), ('graph_network', gnn)])).fit(
        X, y, Xv, yv, fitted=AveragedRegressor.from_fitted([('gradient_boosting', gb), ('graph_network', gnn)]))
    save_model(model, tmp_path/'model')
    reg = Registry(tmp_path/'registry'); reg.register(MOL, tmp_path/'model', make_card(t, ds, {'quick': True}, {}, 'average'))
    keys = KeyStore(tmp_path/'keys.json'); key = keys.create('chemist', 'predict')
    app = create_app([MOL], registry=reg, keys=keys, audit=AuditLog(tmp_path/'audit.jsonl', secret=b'm' * 32))
    smiles = ['Oc1ccccc1Cl', 'CCCCCCCCO']
    want = (gb.predict(np.array(smiles, dtype=object)) + gnn.predict(np.array(smiles, dtype=object))) / 2
    with ThreadServer(app) as s:
        r = _mol_post(s, key, {'instances': [{'smiles': m} for m in smiles]})
        assert r.status_code == 200, r.text
        p = r.json()['predictions']
        assert [q['prediction'] for q in p] == pytest.approx(list(want), rel=1e-6)
        assert all(q['interval']['high'] - q['interval']['low'] == pytest.approx(2 * model.q_) for q in p)
        r = _mol_post(s, key, {'instance': {'smiles': 'Oc1ccccc1Cl'}}, 'explain')
        assert r.status_code == 200 and len(r.json()['explanations'][0]['atom_contributions']) == 8, r.text

def test_detection_playground_picks_a_smear_or_reads_a_file(detection_server, tmp_path):
    "The playground for detection: a held-out smear by its counts, or a JPEG/PNG path; the boxes drawn; a bad file named, not raised."
    from medmaas_nb.widgets import Playground
    from medmaas_nb.detection import encode_image
    s, key, t, model, ds, d = detection_server
    pg = Playground(t, model=model, ds=ds)
    assert pg.editor.example_w.options[0][0].startswith('#0: ') and 'WBC' in pg.editor.example_w.options[0][0]
    assert pg.last_prediction['counts'] == t.predict(model, t.input_spec.validate([ds['test'][0][0]]))[0]['counts']
    assert "alt='detected cells'" in pg.explain_w.value
    img = t.input_spec.validate([ds['test'][0][1]])[0]
    (tmp_path/'smear.png').write_bytes(encode_image(img))
    pg.editor.text_w.value = str(tmp_path/'smear.png')
    assert pg.last_prediction['counts'] == t.predict(model, img[None])[0]['counts'] and pg.error_w.value == ''
    assert pg.out_w.value == t.prediction_html(pg.last_prediction) and pg.out_w.value.startswith('counted: RBC <b class="medmaas-value">')
    (tmp_path/'small.png').write_bytes(encode_image(img[:100, :100]))
    pg.editor.text_w.value = str(tmp_path/'small.png')
    assert 'expected 640 x 480' in pg.error_w.value and pg.last_prediction is None

# --- colon-treatment-effect: covariates in; the outcome under each arm, the effect with its interval and a recommendation out ---

TE = 'colon-treatment-effect'

@pytest.fixture(scope='module')
def effect_server(tmp_path_factory):
    "A quick colon-treatment-effect model trained here, registered in a temporary registry, served by a real uvicorn server."
    yield from _quick_service(tmp_path_factory, TE, 'oncologist', audit=False)

def test_effect_prediction_has_both_arms_an_interval_and_a_recommendation(effect_server):
    s, key, t, model, ds, _ = effect_server
    recs = t.input_spec.to_records(ds['test'][0].iloc[:4])
    r = httpx.post(s.url + f'/api/v1/models/{TE}/predict', json={'instances': recs}, headers=H(key), timeout=60)
    assert r.status_code == 200, r.text
    p = r.json()['predictions']; want = t.predict(model, t.input_spec.validate(recs))
    for q, w in zip(p, want):
        assert set(q['outcomes']) == {'Obs', 'Lev+5FU'} and all(0 <= v <= 1 for v in q['outcomes'].values())
        assert q['effect']['value'] == pytest.approx(q['outcomes']['Lev+5FU'] - q['outcomes']['Obs'], abs=1e-12)
        assert q['prediction'] == pytest.approx(w['prediction'], rel=1e-9) and q['effect']['low'] <= q['effect']['high']
        assert q['recommendation'].startswith('Lev+5FU' if q['effect']['value'] < 0 else 'Obs')
    v2 = {'inputs': [{'name': 'input', 'datatype': 'FP64', 'shape': [1, len(t.input_spec.names)], 'data': [float(recs[0][k]) for k in t.input_spec.names]}]}
    r = httpx.post(s.url + f'/v2/models/{TE}/infer', json=v2, headers=H(key), timeout=60)
    assert r.status_code == 200, r.text
    outs = {o['name']: o['data'][0] for o in r.json()['outputs']}
    assert list(outs)[1:] == ['outcome_control', 'outcome_treated', 'effect_low', 'effect_high']
    assert outs['outcome_control'] == pytest.approx(p[0]['outcomes']['Obs'], rel=1e-9) and next(iter(outs.values())) == pytest.approx(p[0]['prediction'], rel=1e-9)

def test_effect_prediction_html_puts_the_arms_side_by_side():
    t = get_task(TE)
    h = t.prediction_html({'prediction': -0.2, 'outcomes': {'Lev+5FU': 0.4, 'Obs': 0.6}, 'recommendation': 'Lev+5FU <now>', 'outcome': 'risk',
                           'effect': {'value': -0.2, 'low': -0.3, 'high': -0.1, 'level': 0.9, 'meaning': 'Lev+5FU minus Obs'}})
    assert '<th>Obs</th><th>Lev+5FU</th><th>effect (Lev+5FU minus Obs)</th>' in h and '<td>0.6</td><td>0.4</td>' in h  # control first
    assert '<b class="medmaas-value">-0.2</b> [-0.3, -0.1] (90%)' in h and '<b>Lev+5FU &lt;now&gt;</b>' in h and h.count('<tr>') == 2

def test_effect_playground_shows_both_arms(effect_server):
    from medmaas_nb.widgets import Playground
    s, key, t, model, ds, _ = effect_server
    pg = Playground(t, model=model, ds=ds); p = pg.last_prediction
    assert pg.out_w.value == t.prediction_html(p) and 'class="medmaas-arms"' in pg.out_w.value
    assert f"<td>{p['outcomes']['Obs']:.3g}</td><td>{p['outcomes']['Lev+5FU']:.3g}</td>" in pg.out_w.value

@pytest.mark.parametrize('field,value,fragment', [('age', 150, 'out of range'), ('nodes', 'many', 'must be a number'), ('extent', 2.5, 'whole number'),
                                                  ('differ', None, 'missing'), ('arm', 'Lev+5FU', 'unknown field')])
def test_effect_bad_covariate_is_a_400_naming_it(effect_server, field, value, fragment):
    s, key, t, model, ds, _ = effect_server
    rec = t.input_spec.to_records(ds['test'][0].iloc[:1])[0]; rec[field] = value
    r = httpx.post(s.url + f'/api/v1/models/{TE}/predict', json={'instances': [rec]}, headers=H(key), timeout=60)
    assert r.status_code == 400, r.text
    e = r.json(); assert e['field'] == field and fragment in e['error'], e

IH = 'ihdp-treatment-effect'

@pytest.fixture(scope='module')
def ihdp_server(tmp_path_factory):
    "A quick ihdp-treatment-effect model (the bagged two-headed network) trained here, registered, served by a real uvicorn server."
    yield from _quick_service(tmp_path_factory, IH, 'pediatrician', audit=False)

def test_ihdp_serves_the_two_headed_network_as_numpy(ihdp_server):
    "The served IHDP model is the Keras-trained network, saved by skops as NumPy weights; both APIs answer with its arms."
    from medmaas_nb.effect_networks import TwoHeadedNetwork
    s, key, t, model, ds, _ = ihdp_server
    assert isinstance(model, TwoHeadedNetwork) and all(type(w) is np.ndarray for w in model.weights_)
    recs = t.input_spec.to_records(ds['test'][0].iloc[:3])
    r = httpx.post(s.url + f'/api/v1/models/{IH}/predict', json={'instances': recs}, headers=H(key), timeout=60)
    assert r.status_code == 200, r.text
    p = r.json()['predictions']; A = model.predict_arms(t.input_spec.validate(recs))
    for q, (c, tr) in zip(p, A):
        assert q['outcomes'] == {'control': pytest.approx(c, rel=1e-9), 'intervention': pytest.approx(tr, rel=1e-9)}
        assert q['effect']['low'] <= q['effect']['high'] and q['prediction'] == pytest.approx(tr - c, rel=1e-9)
    with Client(s.url, key) as c2: outs = c2.v2_infer(IH, t.input_spec.to_v2(t.input_spec.validate(recs)))
    assert np.allclose(np.ravel(outs['outcome_treated']) - np.ravel(outs['outcome_control']), [q['prediction'] for q in p])

# --- v2 answers with extra tensors: the model runs once per request ---

class Counted:
    "A served model that counts the inputs each of `methods` is run on; otherwise it is the model."
    def __init__(self, model, *methods): self.model, self.methods, self.rows = model, methods, {}
    def __getattr__(self, k):
        v = getattr(self.model, k)
        if k not in self.methods: return v
        def counted(X, *a, **kw): self.rows[k] = self.rows.get(k, 0) + len(X); return v(X, *a, **kw)
        return counted

@pytest.mark.parametrize('fixture,name,methods', [('molecule_server', MOL, ('predict', 'nearest')),
                                                  ('detection_server', DET, ('predict_on_batch',)),
                                                  ('effect_server', TE, ('predict', 'predict_arms', 'predict_interval')),
                                                  ('ihdp_server', IH, ('predict', 'predict_arms', 'predict_interval'))])
def test_v2_request_runs_the_model_once(request, fixture, name, methods):
    "The scores and the tensors a task adds to them come from one run of the model (a Keras model: one padded batch)."
    s, key, t, model, ds, _ = request.getfixturevalue(fixture)
    rt = s.server.config.app.state.models.get(name); spec = t.input_spec
    rt.model = counted = Counted(rt.model, *methods)
    try:
        with Client(s.url, key) as c: outs = c.v2_infer(name, spec.to_v2(spec.validate([spec.example()])))
    finally: rt.model = counted.model
    assert len(outs) > 1 and all(len(v) == 1 for v in outs.values()), outs
    want = {'molecule_server': {'predict': 1, 'nearest': 1}, 'detection_server': {'predict_on_batch': getattr(rt, 'max_batch', 1)},
            'effect_server': {'predict_arms': 1, 'predict_interval': 1}, 'ihdp_server': {'predict_arms': 1, 'predict_interval': 1}}[fixture]
    assert counted.rows == want

# --- metabric-fusion: a clinical record and a list of mutated genes in; the risk with each modality's part out ---

FUS = 'metabric-fusion'

@pytest.fixture(scope='module')
def fusion_server(tmp_path_factory):
    "A quick metabric-fusion model trained here, registered in a temporary registry, served by a real uvicorn server."
    yield from _quick_service(tmp_path_factory, FUS, 'oncologist')

_fus_post = _api_post(FUS)

def test_fusion_prediction_has_the_parts_of_each_modality(fusion_server):
    s, key, t, model, ds, d = fusion_server
    Xte = ds['test'][0]; recs = t.input_spec.to_records(Xte.iloc[:3])
    r = _fus_post(s, key, {'instances': recs})
    assert r.status_code == 200, r.text
    p = r.json()['predictions']; want = model.predict(Xte.iloc[:3])
    assert [q['risk'] for q in p] == pytest.approx(list(want), rel=1e-9, abs=1e-12)
    for q in p:
        assert sum(q['contributions'].values()) == pytest.approx(q['risk'], abs=1e-9) and set(q['contributions']) == {'clinical', 'mutations'}
        assert 0 < q['disease_specific_survival']['10y'] <= q['disease_specific_survival']['5y'] <= 1
    # more mutated genes on the same record changes only the mutation part (or nothing, if the chosen model ignores mutations)
    more = {**recs[0], 'sequenced': 'yes', 'mutated_genes': ['TP53', 'pik3ca']}
    q = _fus_post(s, key, {'instance': more}).json()['predictions'][0]
    assert q['contributions']['clinical'] == pytest.approx(p[0]['contributions']['clinical'], abs=1e-12)
    # the v2 protocol: one BYTES row per patient, the genes comma-joined in the last column
    row = [str(recs[0][f.name]) for f in t.input_spec.features] + [','.join(recs[0]['mutated_genes'])]
    v2 = {'inputs': [{'name': 'input', 'datatype': 'BYTES', 'shape': [1, len(row)], 'data': row}]}
    r = httpx.post(s.url + f'/v2/models/{FUS}/infer', json=v2, headers=H(key), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()['outputs'][0]['data'][0] == pytest.approx(p[0]['risk'], rel=1e-9, abs=1e-12)

@pytest.mark.parametrize('genes,fragment', [(['TP53', 'BRCA3'], "unknown gene(s) ['BRCA3']"), (['NOTAGENE'], "unknown gene(s) ['NOTAGENE']"),
                                            ('TP53,XYZ', "unknown gene(s) ['XYZ']"), (17, 'must be a list of gene symbols')])
def test_fusion_unknown_gene_is_a_400_naming_it(fusion_server, genes, fragment):
    s, key, t, model, ds, d = fusion_server
    rec = t.input_spec.example()
    r = _fus_post(s, key, {'instances': [rec, {**rec, 'mutated_genes': genes}]})
    assert r.status_code == 400, r.text
    e = r.json()
    assert e['field'] == 'instances[1].mutated_genes' and fragment in e['error'] and 'Record 1' in e['error'], e
    assert 'Traceback' not in r.text
    assert _fus_post(s, key, {'instance': rec}).status_code == 200  # and the service keeps serving

def test_fusion_missing_clinical_field_is_a_400(fusion_server):
    s, key, t, model, ds, d = fusion_server
    rec = {k: v for k, v in t.input_spec.example().items() if k != 'npi'}
    r = _fus_post(s, key, {'instance': rec})
    assert r.status_code == 400 and r.json()['field'] == 'npi', r.text
