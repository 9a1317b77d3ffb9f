"""MLflow is the registry: a registered version is an MLflow Model that MLflow's own loader and `mlflow models serve` use,
giving what `medmaas serve` gives; `medmaas serve` starts from a `models:/` URI and the tracking URI alone."""
import json, os, subprocess, sys, time
from pathlib import Path
import httpx
import numpy as np
import pytest
from conftest import free_port, wait_ready
from medmaas_nb.tasks import get_task
from medmaas_nb.registry import Registry, save_model, make_card
from medmaas_nb.security import KeyStore
from medmaas_nb.serving import model_ref

BIN = Path(sys.executable).parent
REG, CLS = 'diabetes-progression', 'breast-cancer-diagnosis'

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "A regression and a classifier model trained here (quick data), registered in MLflow with `production` on each."
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    d = tmp_path_factory.mktemp('mlflow-registry'); reg = Registry(d/'registry')
    out = {'dir': d, 'reg': reg, 'keys': KeyStore(d/'keys.json')}
    for name, est in [(REG, RidgeCV()), (CLS, LogisticRegression(max_iter=1000))]:
        t = get_task(name); ds = t.load(quick=True); X, y = ds['train']
        model = make_pipeline(StandardScaler(), est).fit(X, y); save_model(model, d/name)
        example = t.input_spec.validate([t.input_spec.example()])
        reg.register(name, d/name, make_card(t, ds, {'quick': True}, {}, 'test'), aliases=['production'], input_example=example)
        X = ds['test'][0].iloc[:20]  # as the service feeds the model (the signature's types): the input spec's checked frame
        out[name] = {'task': t, 'X': t.input_spec.validate(t.input_spec.to_records(X)), 'model': model}
    out['key'] = out['keys'].create('tester', 'predict')
    return out


def _medmaas_serve(env, models:list, cache:Path):
    "`medmaas serve` with the tracking URI as its registry setting and an empty folder for its verified copies."
    port = free_port()
    e = {**os.environ, 'MLFLOW_TRACKING_URI': env['reg'].tracking_uri, 'MEDMAAS_REGISTRY_DIR': str(cache),
         'MEDMAAS_KEYS_FILE': str(env['dir']/'keys.json'), 'MEDMAAS_AUDIT_LOG': str(env['dir']/'audit.jsonl')}
    err = open(cache.parent/f'serve-{port}.log', 'w+b')  # a file, not a pipe: a full pipe would block the service
    p = subprocess.Popen([str(BIN/'medmaas'), 'serve', '--host', '127.0.0.1', '--port', str(port), '--models', *models],
                         env=e, stdout=subprocess.DEVNULL, stderr=err)
    p.stderr = err
    return p, f'http://127.0.0.1:{port}'

def _output(p)->str: p.stderr.seek(0); return p.stderr.read().decode(errors='replace')

def _predict(url:str, env, name:str)->list:
    recs = env[name]['task'].input_spec.to_records(env[name]['X'])
    r = httpx.post(f'{url}/api/v1/models/{name}/predict', json={'instances': recs}, headers={'Authorization': f"Bearer {env['key']}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()['predictions']

def test_model_refs_name_versions_and_aliases():
    assert model_ref(f'models:/{CLS}@production') == (CLS, 'production') and model_ref(f'models:/{REG}/2') == (REG, '2')
    with pytest.raises(ValueError, match='expected models:/TASK/VERSION or models:/TASK@ALIAS'): model_ref(f'models:/{REG}')

def test_pyfunc_and_medmaas_serve_from_a_models_uri_agree(env, tmp_path, monkeypatch):
    "`mlflow.pyfunc` on `models:/<task>@production` gives what `medmaas serve --models models:/<task>@production` answers."
    import mlflow, mlflow.pyfunc
    monkeypatch.setenv('MLFLOW_TRACKING_URI', env['reg'].tracking_uri)  # restored after the test: mlflow.set_tracking_uri sets it for subprocesses
    mlflow.set_tracking_uri(env['reg'].tracking_uri); mlflow.set_registry_uri(env['reg'].tracking_uri)
    p, url = _medmaas_serve(env, [f'models:/{REG}@production', f'models:/{CLS}@production'], tmp_path/'fresh')
    try:
        assert wait_ready(f'{url}/v2/health/ready', p), _output(p)[-2000:]
        reg_served, cls_served = _predict(url, env, REG), _predict(url, env, CLS)
    finally: p.terminate(); p.wait(20)
    reg_mlflow = mlflow.pyfunc.load_model(f'models:/{REG}@production').predict(env[REG]['X'])
    cls_mlflow = mlflow.pyfunc.load_model(f'models:/{CLS}@production').predict(env[CLS]['X'])  # predict_proba, as served
    assert np.allclose([r['prediction'] for r in reg_served], np.asarray(reg_mlflow).ravel())
    assert np.allclose([r['probability'] for r in cls_served], np.asarray(cls_mlflow)[:, 1])
    assert np.allclose(np.asarray(cls_mlflow)[:, 1], env[CLS]['model'].predict_proba(env[CLS]['X'])[:, 1])
    # the service fetched each version from MLflow into its empty folder, and loaded it from there, verified
    assert sorted(q.parent.parent.name for q in (tmp_path/'fresh'/'cache').glob('*/*/SHA256SUMS')) == sorted([REG, CLS])

def test_medmaas_serve_refuses_a_version_whose_tags_were_rewritten(env, tmp_path):
    "Digests changed in MLflow by someone without the signing key: `medmaas serve` does not start."
    from mlflow.tracking import MlflowClient
    from medmaas_nb.registry import SUMS_TAG
    reg = Registry(tmp_path/'registry'); (tmp_path/'m').mkdir()
    save_model(env[REG]['model'], tmp_path/'m')
    mv = reg.register(REG, tmp_path/'m', {'task': REG, 'model': {'runtime': 'sklearn'}})
    sums = (mv.path/'SHA256SUMS').read_text()
    MlflowClient(reg.tracking_uri, registry_uri=reg.tracking_uri).set_model_version_tag(REG, str(mv.version), SUMS_TAG, sums.replace(sums[:8], '00000000', 1))
    p, url = _medmaas_serve({**env, 'reg': reg}, [f'models:/{REG}/{mv.version}'], tmp_path/'fresh')
    try: rc = p.wait(180)
    finally:
        if p.poll() is None: p.kill()
    err = _output(p)
    assert rc == 2 and 'the signature of its digests does not match' in err and 'Traceback' not in err, err[-2000:]

def test_mlflow_models_serve_serves_a_registered_version(env, tmp_path):
    "MLflow's own server, on the registered version, answers what the model predicts."
    port = free_port()
    p = subprocess.Popen([str(BIN/'mlflow'), 'models', 'serve', '-m', f'models:/{REG}@production', '--env-manager', 'local',
                          '--host', '127.0.0.1', '--port', str(port)], env={**os.environ, 'MLFLOW_TRACKING_URI': env['reg'].tracking_uri, 'PATH': f"{BIN}:{os.environ.get('PATH', '')}"},
                         stdout=subprocess.DEVNULL, stderr=open(tmp_path/'mlflow.log', 'wb'))
    try:
        assert wait_ready(f'http://127.0.0.1:{port}/ping', p), (tmp_path/'mlflow.log').read_text(errors='replace')[-2000:]
        X = env[REG]['X']
        r = httpx.post(f'http://127.0.0.1:{port}/invocations', json={'dataframe_split': json.loads(X.to_json(orient='split', index=False))}, timeout=60)
        assert r.status_code == 200, r.text
        assert np.allclose(np.asarray(r.json()['predictions']).ravel(), env[REG]['model'].predict(X))
    finally: p.terminate(); p.wait(20)

def test_processes_fetching_one_version_into_an_empty_copy_at_once_all_load_it(env, tmp_path):
    "The replicas of a service on one machine start together and fetch the same version: one downloads, all load it."
    import shutil
    shutil.rmtree(env['reg'].root/'cache', ignore_errors=True)
    at = time.time() + 4
    code = (f"import time; time.sleep(max(0, {at} - time.time())); from medmaas_nb.registry import Registry; "
            f"Registry({str(env['reg'].root)!r}).get({REG!r}, 1).load(); print('loaded')")
    ps = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in ps]
    assert all(rc == 0 and out.strip() == 'loaded' for rc, out, _ in outs), outs
    assert len(list((env['reg'].root/'cache'/REG).iterdir())) == 1  # one copy, no leftover temporary folder

def test_processes_opening_a_new_embedded_store_at_once_all_find_it_set_up(tmp_path):
    "Runs on Ray start together and each opens the new store: MLflow's table set-up and migrations must run once, not interleave."
    for round_ in range(2):  # unserialized, 4 rounds of 3 processes out of 4 broke a migration
        root, at = tmp_path/f'registry{round_}', time.time() + 4
        code = (f"import time; from medmaas_nb.registry import Registry; r = Registry({str(root)!r}); "
                f"time.sleep(max(0, {at} - time.time())); r._client().search_experiments(max_results=1); print('ok')")
        ps = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        outs = [(p.wait(timeout=120), *p.communicate()) for p in ps]
        assert all(rc == 0 and out.strip() == 'ok' for rc, out, _ in outs), [(rc, err.strip().splitlines()[-1:]) for rc, _, err in outs]
