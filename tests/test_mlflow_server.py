"""One MLflow server shared by a lab: `MLFLOW_TRACKING_URI=http://HOST:PORT` is the only setting. A real `mlflow server`
with proxied artifacts on 127.0.0.1; a quick pipeline registers from one folder, an empty folder lists and serves that
version; two processes with separate folders register at once; an unreachable server is one line and exit 2."""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import httpx
import numpy as np
import pytest
from conftest import free_port, wait_ready, require_data
from medmaas_nb.core import file_digest
from medmaas_nb.registry import Registry, save_model
from medmaas_nb.security import KeyStore
from medmaas_nb.tasks import get_task

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TASK = 'diabetes-progression'

def _env(**kw)->dict:
    "This checkout's package and console scripts first, plus `kw`."
    return {**os.environ, 'PATH': f"{BIN}:{os.environ.get('PATH', '')}", 'PYTHONPATH': str(ROOT), **kw}


def _stop(p:subprocess.Popen):
    "End a process started in its own session, and whatever it started (the MLflow server runs uvicorn beneath it)."
    if p.poll() is None:
        try: os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError: pass
    try: p.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.wait(10)

@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "A real `mlflow server` (SQLite store, artifacts proxied to its own folder); its URI, folders and a shared signing key."
    d = tmp_path_factory.mktemp('mlflow-server'); port = free_port()
    log = open(d/'server.log', 'w+b')  # a file, not a pipe: a full pipe would block the server
    p = subprocess.Popen([str(BIN/'mlflow'), 'server', '--host', '127.0.0.1', '--port', str(port), '--workers', '1',
                          '--backend-store-uri', f"sqlite:///{d/'mlflow.db'}", '--artifacts-destination', str(d/'artifacts'),
                          '--serve-artifacts'],
                         env=_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION='false'), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        uri = f'http://127.0.0.1:{port}'
        if not wait_ready(f'{uri}/health', p): log.seek(0); pytest.fail(f'mlflow server did not start:\n{log.read().decode(errors="replace")[-3000:]}')
        # the signing key is a shared secret (each machine that registers or serves has a copy), not registry state
        yield {'uri': uri, 'dir': d, 'artifacts': d/'artifacts', 'key': d/'secrets'/'signing.key'}
    finally: _stop(p); log.close()

def _machine(server, folder:Path)->dict:
    "The environment of one machine of the lab: its own folders, the server's URI, the shared key file."
    return _env(MLFLOW_TRACKING_URI=server['uri'], MEDMAAS_REGISTRY_DIR=str(folder/'registry'), MEDMAAS_RUNS_DIR=str(folder/'runs'),
                MEDMAAS_CACHE_DIR=str(folder/'cache'), MEDMAAS_SIGNING_KEY_FILE=str(server['key']),
                MEDMAAS_KEYS_FILE=str(folder/'keys.json'), MEDMAAS_AUDIT_LOG=str(folder/'audit.jsonl'))

def _files(folder:Path)->list[str]: return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file()) if folder.exists() else []

def test_a_run_registered_from_one_folder_is_listed_and_served_from_an_empty_one(server, tmp_path):
    require_data(get_task(TASK).dataset)
    A, B = tmp_path/'A', tmp_path/'B'; B.mkdir()
    r = subprocess.run([str(BIN/'medmaas'), 'run', TASK, '--quick', '--quiet'], env=_machine(server, A), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    version = json.loads(next((A/'runs').rglob('registration.json')).read_text())['version']
    # A kept only its verified copy: no MLflow store or artifact store of its own
    assert not [q for q in A.rglob('*') if q.name in ('mlflow.db', 'mlruns', 'mlartifacts', 'artifacts')], _files(A)
    copy_a = next((A/'registry'/'cache'/TASK).glob(f'{version}-*'))

    assert _files(B) == []  # B starts empty
    r = subprocess.run([str(BIN/'medmaas'), 'models'], env=_machine(server, B), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split() for line in r.stdout.splitlines()]
    assert any(row[:2] == [TASK, str(version)] for row in rows), r.stdout
    # B's copy came through the server: its files are, byte for byte, those in the server's artifact folder
    copy_b = B/'registry'/'cache'/TASK/copy_a.name
    assert (copy_b/'SHA256SUMS').read_text() == (copy_a/'SHA256SUMS').read_text()
    on_server = next(server['artifacts'].glob(f"*/{copy_a.name.split('-', 1)[1]}*/artifacts/model"))  # <experiment>/<run>/...
    for line in (copy_b/'SHA256SUMS').read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        assert file_digest(on_server/Path(rel).relative_to('model')) == digest == file_digest(copy_b/rel), rel
    assert sorted(q.suffix for q in (on_server.parent/'reports').iterdir()), 'the run\'s reports were not attached'  # log_reports, through the server
    mv = Registry(B/'registry', key_file=server['key'], tracking_uri=server['uri'])._client().get_model_version(TASK, str(version))
    assert mv.source.startswith('mlflow-artifacts:/'), mv.source  # the server proxies the artifacts

    # B serves that version; its answers are what A's model predicts
    key = KeyStore(B/'keys.json').create('tester', 'predict'); port = free_port()
    err = open(B/'serve.log', 'w+b')
    p = subprocess.Popen([str(BIN/'medmaas'), 'serve', '--host', '127.0.0.1', '--port', str(port), '--models', f'{TASK}:{version}'],
                         env=_machine(server, B), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        url = f'http://127.0.0.1:{port}'
        if not wait_ready(f'{url}/v2/health/ready', p): err.seek(0); pytest.fail(err.read().decode(errors='replace')[-3000:])
        t = get_task(TASK); X = t.input_spec.validate(t.input_spec.to_records(t.load(quick=True)['test'][0].iloc[:20]))
        res = httpx.post(f'{url}/api/v1/models/{TASK}/predict', json={'instances': t.input_spec.to_records(X)},
                         headers={'Authorization': f'Bearer {key}'}, timeout=60)
        assert res.status_code == 200, res.text
        meta = httpx.get(f'{url}/api/v1/models/{TASK}/card', headers={'Authorization': f'Bearer {key}'}, timeout=30)
    finally: _stop(p); err.close()
    model_a, card_a = Registry(A/'registry', key_file=server['key'], tracking_uri=server['uri']).load(TASK, version)
    assert np.allclose([row['prediction'] for row in res.json()['predictions']], model_a.predict(X))
    assert meta.status_code == 200 and meta.json().get('version') == version == card_a['version'], meta.text[:500]

_WORKER = '''
import json, sys, time
from pathlib import Path
from medmaas_nb.registry import Registry
me, other, gate, rounds, model = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
reg, got = Registry(), {}
for r in range(rounds):
    (gate/f'{r}-{me}').touch()
    t0 = time.monotonic()
    while not (gate/f'{r}-{other}').exists():  # both start each round together
        if time.monotonic() - t0 > 30: sys.exit(f'round {r}: the other registrant never came')
        time.sleep(0.002)
    got[r] = reg.register(f'race-{r}', model, {'task': f'race-{r}', 'model': {'runtime': 'sklearn'}}, aliases=['production']).version
print(json.dumps(got))
'''

def test_b_concurrent_registrations_from_two_machines_end_with_production_on_the_newer(server, tmp_path):
    "Two processes with separate folders (no common lock) register one task at the same moment, in several rounds."
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = np.random.default_rng(0).normal(size=(30, 3)); save_model(make_pipeline(StandardScaler(), RidgeCV()).fit(X, X @ [1, 2, 3]), tmp_path/'model')
    (tmp_path/'worker.py').write_text(_WORKER); (tmp_path/'gate').mkdir(); rounds = 12  # the old alias code lost about one round in ten
    procs = [subprocess.Popen([sys.executable, str(tmp_path/'worker.py'), me, other, str(tmp_path/'gate'), str(rounds), str(tmp_path/'model')],
                              env=_machine(server, tmp_path/me), stdout=subprocess.PIPE, stderr=open(tmp_path/f'{me}.log', 'wb'), text=True, start_new_session=True)
             for me, other in [('a', 'b'), ('b', 'a')]]
    try: outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs: _stop(p)
    assert [p.returncode for p in procs] == [0, 0], [(tmp_path/f'{m}.log').read_text()[-2000:] for m in 'ab']
    a, b = (json.loads(o) for o in outs)
    reg = Registry(tmp_path/'reader', key_file=server['key'], tracking_uri=server['uri'])
    for r in map(str, range(rounds)):
        assert sorted([a[r], b[r]]) == [1, 2] == reg.versions(f'race-{r}'), (r, a[r], b[r])
        assert reg.aliases(f'race-{r}') == {'production': 2}, (r, a[r], b[r], reg.aliases(f'race-{r}'))

def test_d_registry_reads_through_the_server(server, tmp_path):
    "With a server URI every read goes through MLflow's client: tasks, versions, aliases, `get` by alias, paged searches."
    from sklearn.linear_model import RidgeCV
    from medmaas_nb.registry import ModelNotFound, _all
    X = np.random.default_rng(1).normal(size=(30, 3)); save_model(RidgeCV().fit(X, X @ [3, 2, 1]), tmp_path/'model')
    writer = Registry(tmp_path/'w', key_file=server['key'], tracking_uri=server['uri']); card = {'task': 'reads', 'model': {'runtime': 'sklearn'}}
    writer.register('reads', tmp_path/'model', card, aliases=['production']); writer.register('reads', tmp_path/'model', card, aliases=['staging'])
    reg = Registry(tmp_path/'r', key_file=server['key'], tracking_uri=server['uri'])
    assert reg._query('SELECT 1') is None  # no SQLite shortcut: the client answers
    assert 'reads' in reg.tasks() and reg.versions('reads') == [1, 2] and reg.aliases('reads') == {'production': 1, 'staging': 2}
    assert reg.versions('no-such-task') == [] and reg.aliases('no-such-task') == {}
    assert reg.get('reads').version == 1 and reg.get('reads', 'staging').version == 2  # production wins over newest
    with pytest.raises(ModelNotFound, match='has no version 7'): reg.get('reads', 7)
    assert np.allclose(reg.load('reads', 2)[0].predict(X), X @ [3, 2, 1], atol=0.5)  # fetched through the server, verified
    c = reg._client()  # one result per page still gives every result
    assert sorted(int(v.version) for v in _all(c.search_model_versions, filter_string="name = 'reads'", max_results=1)) == [1, 2]
    assert sorted(m.name for m in _all(c.search_registered_models, max_results=1)) == reg.tasks()

def test_c_an_unreachable_server_is_one_line_and_exit_2(tmp_path):
    "`medmaas models` and `medmaas serve` (run side by side) name the server in one line, after seconds, not minutes."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); dead = f'http://127.0.0.1:{s.getsockname()[1]}'  # bound, not listening: refused
        env, t0 = _machine({'uri': dead, 'key': tmp_path/'signing.key'}, tmp_path), time.monotonic()
        procs = [subprocess.Popen([str(BIN/'medmaas'), *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
                 for cmd in (['models'], ['serve', '--port', str(free_port()), '--models', TASK])]
        try: outs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs: _stop(p)
    took = time.monotonic() - t0
    for p, (_, err) in zip(procs, outs):
        lines = err.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and 'Traceback' not in err, err[-3000:]
        assert lines[0].startswith(f'error: Cannot reach the MLflow tracking server {dead} (Connection refused)'), lines
    assert took < 60, took  # MLflow's own retries would take about four minutes
