"""`medmaas serve --ray`: the service as a Ray Serve deployment, on a local Ray started here (2 CPUs; two replicas of half
a CPU each), asked through Ray Serve's HTTP proxy: the answers, keys and errors of `medmaas serve`, the requests spread
over both replicas, a replica killed under load and replaced; the command line's checks of --replicas and --autoscale."""
import os, signal, subprocess, sys, threading, time
from collections import Counter
from pathlib import Path
import httpx
import numpy as np
import pytest
from conftest import free_port, require_module
from medmaas_nb.tasks import get_task
from medmaas_nb.registry import Registry, save_model, make_card
from medmaas_nb.security import KeyStore

BIN = Path(sys.executable).parent
TASK = 'diabetes-progression'
PREDICT, INFER = f'/api/v1/models/{TASK}/predict', f'/v2/models/{TASK}/infer'

def _replicas()->dict:
    "{replica id: pid} of the live replicas, from Ray's actor table (replica actors are named SERVE_REPLICA::app#deployment#id)."
    from ray._private.state import actors
    return {a['Name'].rsplit('#', 1)[1]: a['Pid'] for a in actors(actor_state_name='ALIVE').values()
            if a['Name'].startswith('SERVE_REPLICA::medmaas#')}

@pytest.fixture(scope='module')
def svc(tmp_path_factory):
    "A ridge model trained here (quick data) in a temporary MLflow registry, served by two replicas on a local Ray."
    require_module('ray.serve', 'the ray[serve] extra')
    import psutil, ray
    from ray import serve
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from medmaas_nb.cluster import start_ray
    from medmaas_nb.ray_serve import deploy
    d = tmp_path_factory.mktemp('ray-serve'); reg = Registry(d/'registry')
    t = get_task(TASK); ds = t.load(quick=True); X, y = ds['train']
    model = make_pipeline(StandardScaler(), RidgeCV()).fit(X, y); save_model(model, d/TASK)
    reg.register(TASK, d/TASK, make_card(t, ds, {'quick': True}, {}, 'test'), aliases=['production'],
                 input_example=t.input_spec.validate([t.input_spec.example()]))
    keys = KeyStore(d/'keys.json')
    # the replicas get these through the deployment's runtime_env (`ray_env`); the version is fetched from MLflow
    # into an empty folder (the registry setting), as `medmaas serve` does
    env = {'MLFLOW_TRACKING_URI': reg.tracking_uri, 'MEDMAAS_REGISTRY_DIR': str(d/'cache'),
           'MEDMAAS_KEYS_FILE': str(d/'keys.json'), 'MEDMAAS_AUDIT_LOG': str(d/'audit.jsonl'), 'MEDMAAS_ROW_RATE_LIMIT': '1e9'}
    old = {k: os.environ.get(k) for k in env}; os.environ.update(env)
    mine = set(psutil.Process().children(recursive=True))
    started = start_ray('auto', num_cpus=2)
    try:
        url = deploy([TASK], replicas=2, port=free_port())
        X = t.input_spec.validate(t.input_spec.to_records(ds['test'][0].iloc[:20]))
        yield {'url': url, 'dir': d, 'task': t, 'model': model, 'X': X, 'recs': t.input_spec.to_records(X),
               'key': keys.create('tester', 'predict')}
    finally:
        ray_procs = set(psutil.Process().children(recursive=True)) - mine
        serve.shutdown()
        if started: ray.shutdown()
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    if started:  # every process the local Ray started (GCS, raylet, controller, proxy, replicas) has ended
        _, alive = psutil.wait_procs(list(ray_procs), timeout=20)
        left = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f'Ray processes left running: {[(p.pid, p.name()) for p in left]}'

def H(key): return {'Authorization': f'Bearer {key}'}

def test_predictions_through_the_proxy_equal_the_model(svc):
    "JSON API and v2 inference through Ray Serve's proxy give the model's own predictions; no key: 401; bad input: 400."
    url, want = svc['url'], svc['model'].predict(svc['X'])
    r = httpx.post(url + PREDICT, json={'instances': svc['recs']}, headers=H(svc['key']), timeout=30)
    assert r.status_code == 200, r.text
    assert np.allclose([p['prediction'] for p in r.json()['predictions']], want, rtol=1e-12)
    assert r.headers['x-medmaas-replica'] and r.json()['model'] == TASK
    v2 = {'inputs': [{'name': 'input', 'datatype': 'FP64', 'shape': list(svc['X'].shape), 'data': svc['X'].to_numpy().ravel().tolist()}]}
    r = httpx.post(url + INFER, json=v2, headers=H(svc['key']), timeout=30)
    assert r.status_code == 200, r.text
    out = {o['name']: o for o in r.json()['outputs']}
    assert np.allclose(out['prediction']['data'], want, rtol=1e-12) and r.json()['model_name'] == TASK
    r = httpx.post(url + PREDICT, json={'instances': svc['recs']}, timeout=30)
    assert r.status_code == 401 and r.headers['www-authenticate'] == 'Bearer' and r.json()['error']
    r = httpx.post(url + PREDICT, json={'instance': {**svc['recs'][0], 'age': 1e9}}, headers=H(svc['key']), timeout=30)
    assert r.status_code == 400 and "'age' = 1e+09 is out of range" in r.json()['error'], r.text
    r = httpx.post(url + INFER, json={'inputs': [{**v2['inputs'][0], 'shape': [1, 9], 'data': v2['inputs'][0]['data'][:9]}]}, headers=H(svc['key']), timeout=30)
    assert r.status_code == 400 and 'expected [-1, 10]' in r.json()['error'], r.text

def test_requests_spread_over_both_replicas_and_share_the_audit_log(svc):
    "Concurrent requests are answered by both live replicas (the x-medmaas-replica header); each writes the shared audit log."
    from concurrent.futures import ThreadPoolExecutor
    body = {'instances': svc['recs'][:2]}
    def one(_):
        r = httpx.post(svc['url'] + PREDICT, json=body, headers=H(svc['key']), timeout=30)
        return r.status_code, r.headers.get('x-medmaas-replica'), r.json()['request_id']
    with ThreadPoolExecutor(8) as ex: got = list(ex.map(one, range(64)))
    assert {s for s, *_ in got} == {200}
    by_replica = Counter(rep for _, rep, _ in got)
    assert set(by_replica) == set(_replicas()) and len(by_replica) == 2, by_replica
    assert min(by_replica.values()) >= 8, by_replica  # spread, not a trickle to one of them
    time.sleep(0.5)  # the audit log is flushed line by line; give the last writes a moment
    import json
    lines = [json.loads(l) for l in (svc['dir']/'audit.jsonl').read_text().splitlines()]
    logged = {l['request_id']: l for l in lines}
    assert all(rid in logged and logged[rid]['status'] == 200 and logged[rid]['key'] == 'tester' for *_, rid in got)
    assert all('instances' not in l and 'age' not in json.dumps(l) for l in lines)  # a keyed digest, never the payload

def test_a_killed_replica_is_replaced_and_only_its_requests_fail(svc):
    """Stop, then SIGKILL, one replica while 8 clients send requests back to back.

    Requests on the other replica all succeed, and Ray Serve stops routing to the dead one at once and starts a new
    replica. The requests that were inside the killed replica get **500** with uvicorn's plain-text 'Internal Server
    Error', not a retryable 503: in Ray 2.60 the proxy maps the replica's `RayActorError` to 500
    (`ray/serve/_private/http_util.py`, `get_http_response_status`), and `send_http_response_on_exception` writes an
    answer only for 408, 429 and 503, so the proxy's own uvicorn answers 500. The app cannot shape that answer: it died
    with the replica. Clients may retry such a 500 of a prediction (it has no side effect besides an audit line)."""
    url, key = svc['url'], svc['key']
    before = _replicas(); assert len(before) == 2
    victim, survivor = sorted(before)
    res, stop, sent = [], threading.Event(), {}
    body = {'instances': svc['recs'] * 100}  # 2,000 rows: long enough in a replica that both hold requests at any moment
    def client(i):
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                sent[i] = time.monotonic()
                r = c.post(url + PREDICT, json=body, headers=H(key)); sent[i] = None
                res.append((time.monotonic(), r.status_code, r.headers.get('x-medmaas-replica'), r.text[:200]))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for th in threads: th.start()
    try:
        time.sleep(1.0)
        # stopped first, so that requests are surely inside the victim when it dies (a replica that hangs, then is killed)
        os.kill(before[victim], signal.SIGSTOP); t_stop = time.monotonic()
        while time.monotonic() - t_stop < 10 and not any(t and t_stop - t > 0 and time.monotonic() - t > 1.0 for t in list(sent.values())):
            time.sleep(0.1)  # until a request sent before the stop has waited a second: one held by the stopped victim
        os.kill(before[victim], signal.SIGKILL); t_kill = time.monotonic()
        t0, new = time.monotonic(), set()
        while time.monotonic() - t0 < 60 and not new:  # replaced: a new replica id, answering requests
            time.sleep(0.5)
            now = _replicas()
            new = {r for r in now if r not in before} if len(now) == 2 else set()
            new &= {rep for _, s, rep, _ in res if s == 200}
        time.sleep(1.0)
    finally:
        stop.set()
        for th in threads: th.join(60)
    assert new, f'no replacement replica answered within 60 s; replicas: {_replicas()}'
    assert set(_replicas()) == {survivor} | new and len(new) == 1
    failed = [(t - t_kill, s, rep, txt) for t, s, rep, txt in res if s != 200]
    # what failed: the requests held inside the victim (at least one, at most one per client), at the kill, as Ray's plain 500
    assert 1 <= len(failed) <= 8, failed
    assert all(s == 500 and txt == 'Internal Server Error' and rep is None and -0.5 < dt < 10 for dt, s, rep, txt in failed), failed
    print(f'{len(failed)} requests failed (500), all within {max([dt for dt, *_ in failed], default=0):.2f} s of the kill; '
          f'{sum(s == 200 for _, s, *_ in res)} succeeded')
    ok = Counter(rep for t, s, rep, _ in res if s == 200 and t > t_kill + 0.5)  # answers already on their way may land just after
    assert ok[survivor] > 0 and victim not in ok and sum(ok[r] for r in new) > 0, ok
    r = httpx.post(url + PREDICT, json={'instances': svc['recs']}, headers=H(key), timeout=30)
    assert r.status_code == 200 and np.allclose([p['prediction'] for p in r.json()['predictions']], svc['model'].predict(svc['X']))

@pytest.mark.parametrize('args, message', [
    (['--replicas', '2'], 'error: --replicas and --autoscale need --ray'),
    (['--ray', '--autoscale', '3,1'], 'error: --autoscale 3,1: expected MAX at least MIN; got MIN 3 and MAX 1.'),
    (['--ray', '--replicas', '2', '--autoscale', '1,2'], 'error: --replicas and --autoscale exclude each other'),
    (['--ray', '--models', 'no-such-task'], "error: Unknown task 'no-such-task'"),
])
def test_cli_refuses_bad_ray_options_in_one_line(args, message, tmp_path):
    "Bad options stop `medmaas serve` with exit 2 and one line, before any Ray starts."
    t0 = time.monotonic()
    p = subprocess.run([str(BIN/'medmaas'), 'serve', '--port', str(free_port()), *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'MEDMAAS_REGISTRY_DIR': str(tmp_path/'registry'), 'MLFLOW_TRACKING_URI': f"sqlite:///{tmp_path/'mlflow.db'}"})
    err = p.stderr.strip()
    assert p.returncode == 2 and err.startswith(message) and len(err.splitlines()) == 1 and 'Traceback' not in err, err[-2000:]
    assert 'Ray' not in p.stdout and time.monotonic() - t0 < 60
