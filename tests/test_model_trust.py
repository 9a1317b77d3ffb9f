"""Loading a model never runs code: crafted model versions refused by the registry, by `medmaas serve` (a real server process
on loopback) and by the widgets, with a marker file proving no payload ran; Keras files; concurrent registrations."""
import io, json, os, shlex, subprocess, sys, time, zipfile
from pathlib import Path
import httpx
import numpy as np
import pytest
from conftest import free_port
from medmaas_nb.registry import Registry, RegistryError, TamperedModel, UntrustedModel, ModelVersion, make_card, SIGNATURE, _sums
from medmaas_nb.runtimes import save_model, load_model, skops_types, model_types
from medmaas_nb.core import write_json
from medmaas_nb.tasks import get_task

TASK = 'diabetes-progression'
BIN = Path(sys.executable).parent

# --- hand-written skops nodes (the schema format of skops.io, see skops/io/_general.py) ---
def node(mod, cls, loader, **kw): return {'__module__': mod, '__class__': cls, '__loader__': loader, **kw}
def text(s): return node('builtins', 'str', 'JsonNode', content=json.dumps(s), is_json=True)
def tup(*items): return node('builtins', 'tuple', 'TupleNode', content=list(items))
def call(mod, fn, *args): return node(mod, fn, 'ConstructorFromReduceNode', content=tup(*args))  # skops calls mod.fn(*args)

def payloads(marker:Path)->dict:
    "{name: skops node} that each create `marker` when the model is built."
    py, sh = f'open({str(marker)!r}, "w").close()', f'touch {shlex.quote(str(marker))}'
    no_kwargs = node('builtins', 'dict', 'DictNode', content={}, key_types=node('builtins', 'list', 'ListNode', content=[]))
    return {'exec': call('builtins', 'exec', text(py)), 'eval': call('builtins', 'eval', text(py)),
            'os.system': call('os', 'system', text(sh)),
            'methodcaller': call('operator', 'call', node('operator', 'methodcaller', 'OperatorFuncNode', attrs=tup(text('system'), text(sh))),
                                 node('os.path', 'os', 'FunctionNode')),
            'partial': call('operator', 'call', node('functools', 'partial', 'PartialNode', content={
                'func': node('os', 'system', 'FunctionNode'), 'args': tup(text(sh)), 'kwds': no_kwargs, 'namespace': text(None)}))}

def inject(data:bytes, payload:dict)->bytes:
    "A copy of a skops file with `payload` as one more attribute of its top object."
    zin = zipfile.ZipFile(io.BytesIO(data)); schema = json.loads(zin.read('schema.json'))
    schema['content']['content']['payload'] = payload
    schema['content']['key_types']['content'].append(node('builtins', 'str', 'TypeNode'))
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as z:
        for n in zin.namelist(): z.writestr(n, json.dumps(schema) if n == 'schema.json' else zin.read(n))
    return out.getvalue()

# what each crafted version is refused for (a fragment of the message)
EXPECTED = {'exec': 'builtins.exec (can run code', 'eval': 'builtins.eval (can run code', 'os.system': 'os.system (can run code',
            'methodcaller': 'operator.methodcaller', 'partial': 'functools.partial',
            'card mismatch': 'not in the types its card recorded', 'rewritten SHA256SUMS': 'signature of its digests does not match',
            'extra file': 'files that were not registered: model/extra.skops', 'removed file': 'model/model.skops is missing',
            'unsigned': 'unsigned (registered without medmaas_nb, or its signature was removed)'}

@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    "A registry with a good diabetes-progression version (1) and one crafted version per entry of `EXPECTED`."
    from medmaas_nb.clinical import diabetes_candidates
    d = tmp_path_factory.mktemp('trust'); markers = d/'markers'; markers.mkdir()
    t = get_task(TASK); ds = t.load(quick=True)
    X, y = ds['train']
    model = diabetes_candidates(quick=True)['ridge'].fit(X, y); save_model(model, d/'model')
    reg = Registry(d/'registry'); card = make_card(t, ds, {'quick': True}, {}, 'ridge')
    good = reg.register(TASK, d/'model', card)
    data = (d/'model'/'model.skops').read_bytes()
    versions = {}
    def forge(name, model_bytes, card_types=None):
        "A version signed as the key holder would sign it, its card listing `card_types` (default: every name in the file)."
        mv = reg.register(TASK, d/'model', card)
        (mv.model_dir/'model.skops').write_bytes(model_bytes)
        c = json.loads((mv.model_dir/'card.json').read_text())
        c['model']['types'] = sorted(skops_types(model_bytes) if card_types is None else card_types)
        write_json(mv.model_dir/'card.json', c); reg.seal(mv.path, TASK, mv.version); versions[name] = mv.version
    for name, p in payloads(markers/'types').items(): forge(name, inject(data, p))
    other = diabetes_candidates(quick=True)['random_forest'].fit(X, y); save_model(other, d/'other')
    forge('card mismatch', (d/'other'/'model.skops').read_bytes(), card_types=good.card['model']['types'])
    exec_model = inject(data, payloads(markers/'files')['exec'])
    def fresh(name): mv = reg.register(TASK, d/'model', card); versions[name] = mv.version; return mv
    mv = fresh('rewritten SHA256SUMS'); (mv.model_dir/'model.skops').write_bytes(exec_model); (mv.path/'SHA256SUMS').write_text(_sums(mv.path))
    mv = fresh('extra file'); (mv.model_dir/'extra.skops').write_bytes(exec_model)
    mv = fresh('removed file'); (mv.model_dir/'model.skops').unlink()
    mv = fresh('unsigned'); (mv.path/SIGNATURE).unlink()
    assert set(versions) == set(EXPECTED)
    return {'dir': d, 'reg': reg, 'good': good, 'versions': versions, 'markers': markers, 'task': t, 'ds': ds, 'model': model}

def no_marker(h): assert not list(h['markers'].iterdir()), 'a payload ran'

def test_the_payloads_are_live(tmp_path, hostile):
    "Trusting every name a crafted file holds (what trusting whole modules amounted to) runs its payload: the refusals below matter."
    import skops.io as sio
    data = (hostile['dir']/'model'/'model.skops').read_bytes()
    for name, p in payloads(tmp_path/'live').items():
        bad = inject(data, p)
        sio.loads(bad, trusted=sorted(skops_types(bad)))
        assert (tmp_path/'live').exists(), name
        (tmp_path/'live').unlink()

@pytest.mark.parametrize('name', list(EXPECTED))
def test_registry_refuses(hostile, name):
    reg, v = hostile['reg'], hostile['versions'][name]
    for load in (lambda: reg.load(TASK, v), lambda: reg.get(TASK, v).load()):
        with pytest.raises((UntrustedModel, TamperedModel)) as e: load()
        assert EXPECTED[name] in str(e.value) and f'{TASK} v{v}' in str(e.value) and len(str(e.value)) <= 400, str(e.value)
    no_marker(hostile)

def test_the_untouched_version_still_loads(hostile):
    X = hostile['ds']['test'][0]
    model, card = hostile['reg'].load(TASK, hostile['good'].version)
    assert np.allclose(model.predict(X), hostile['model'].predict(X)) and card['model']['types'] == model_types(hostile['dir']/'model')

def _serve(hostile, models:list, timeout:float=120):
    "Run `medmaas serve --models ...` on a free loopback port until it exits or is ready: (exit code or None, output, ready)."
    port = free_port(); log = hostile['dir']/f'serve-{port}.log'
    env = {**os.environ, 'MEDMAAS_REGISTRY_DIR': str(hostile['reg'].root), 'MLFLOW_TRACKING_URI': hostile['reg'].tracking_uri, 'MEDMAAS_KEYS_FILE': str(hostile['dir']/'keys.json'),
           'MEDMAAS_AUDIT_LOG': str(hostile['dir']/'audit.jsonl')}
    with open(log, 'wb') as out:
        p = subprocess.Popen([str(BIN/'medmaas'), 'serve', '--host', '127.0.0.1', '--port', str(port), '--models', *models],
                             env=env, stdout=out, stderr=subprocess.STDOUT)
    ready, t0 = False, time.perf_counter()
    try:
        while time.perf_counter() - t0 < timeout and p.poll() is None:
            try: ready = httpx.get(f'http://127.0.0.1:{port}/v2/health/ready', timeout=1).status_code == 200
            except httpx.TransportError: pass
            if ready: break
            time.sleep(0.1)
    finally:
        if p.poll() is None: p.terminate(); p.wait(10)
    return (None if ready else p.returncode), log.read_text(errors='replace'), ready

@pytest.mark.parametrize('name', list(EXPECTED))
def test_serve_refuses_to_start(hostile, name):
    "The service loads every model before it answers: a refused version stops the start, with the registry's message in the log."
    v = hostile['versions'][name]
    rc, out, ready = _serve(hostile, [f'{TASK}:{v}'])
    assert not ready and rc not in (None, 0), out[-2000:]
    assert EXPECTED[name] in out and f'{TASK} v{v}' in out, out[-2000:]
    assert rc == 2 and 'Traceback' not in out, out[-2000:]  # one clear line from the command, not a server crash
    no_marker(hostile)

def test_serve_refuses_a_hostile_production_version_and_serves_a_good_one(hostile):
    "Unpinned, the service takes `production`: pointed at a crafted version it refuses to start; pointed back, it serves."
    reg, v = hostile['reg'], hostile['versions']['exec']
    reg.set_alias(TASK, 'production', v)
    try:
        rc, out, ready = _serve(hostile, [TASK])
        assert not ready and rc not in (None, 0) and EXPECTED['exec'] in out, out[-2000:]
    finally: reg.set_alias(TASK, 'production', hostile['good'].version)
    rc, out, ready = _serve(hostile, [TASK])
    assert ready, out[-2000:]
    no_marker(hostile)

@pytest.mark.parametrize('name', list(EXPECTED))
def test_widgets_refuse(hostile, name):
    from medmaas_nb.widgets import Playground
    v = hostile['versions'][name]
    with pytest.raises((UntrustedModel, TamperedModel)) as e:
        Playground.from_registry(TASK, version=v, registry=hostile['reg'], ds=hostile['ds'])
    assert EXPECTED[name] in str(e.value)
    no_marker(hostile)
    pg = Playground.from_registry(TASK, version=hostile['good'].version, registry=hostile['reg'], ds=hostile['ds'])
    assert pg.last_prediction is not None

def test_a_version_signed_with_another_key_is_refused_and_names_both_keys(hostile, tmp_path, monkeypatch):
    monkeypatch.setenv('MEDMAAS_SIGNING_KEY_FILE', str(tmp_path/'other.key'))
    from medmaas_nb.registry import signing_key, key_id
    mine = key_id(signing_key(create=True))
    with pytest.raises(TamperedModel) as e: hostile['reg'].load(TASK, hostile['good'].version)
    assert f"yours is '{mine}'" in str(e.value) and 'must share one key file' in str(e.value)
    monkeypatch.setenv('MEDMAAS_SIGNING_KEY_FILE', str(tmp_path/'missing.key'))
    with pytest.raises(RegistryError, match='No signing key at'): hostile['reg'].load(TASK, hostile['good'].version)

def test_the_signing_key_is_created_private_and_outside_the_registry(tmp_path, monkeypatch):
    from medmaas_nb.registry import signing_key_file
    monkeypatch.delenv('MEDMAAS_SIGNING_KEY_FILE'); monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path/'config'))
    assert signing_key_file() == tmp_path/'config'/'medmaas_nb'/'signing.key'
    X = np.random.default_rng(0).normal(size=(20, 3))
    from sklearn.linear_model import RidgeCV
    save_model(RidgeCV().fit(X, X.sum(1)), tmp_path/'model')
    reg = Registry(tmp_path/'registry'); reg.register('toy', tmp_path/'model', {'task': 'toy'})
    key = tmp_path/'config'/'medmaas_nb'/'signing.key'
    assert key.stat().st_mode & 0o777 == 0o600 and not list(reg.root.rglob('*.key'))
    monkeypatch.setenv('MEDMAAS_SIGNING_KEY_FILE', str(reg.root/'signing.key'))
    with pytest.raises(RegistryError, match='inside the registry'): reg.register('toy', tmp_path/'model', {'task': 'toy'})

# --- Keras ---

def test_keras_lambda_and_foreign_classes_are_refused(tmp_path):
    "A Lambda layer carries Python code: refused by the allowlist before Keras reads it, and by Keras's safe_mode too."
    from medmaas_nb.core import keras
    K = keras(); marker = tmp_path/'marker'
    payload = eval(f"lambda x: x * 2 + (open({str(marker)!r}, 'w').close() or 0)")  # no closure: Keras saves its code
    inp = K.Input((3,)); out = K.layers.Lambda(payload)(inp)
    marker.unlink(missing_ok=True)  # building the layer may run it once, here, on purpose
    save_model(K.Model(inp, out), tmp_path/'lam', 'keras')
    with pytest.raises(UntrustedModel, match='keras.layers.Lambda'): load_model(tmp_path/'lam', 'keras')
    with pytest.raises(UntrustedModel, match='keras.layers.Lambda'): Registry(tmp_path/'reg').register('net', tmp_path/'lam', {'model': {'runtime': 'keras'}})
    with pytest.raises(ValueError, match='safe_mode'): K.models.load_model(tmp_path/'lam'/'model.keras', safe_mode=True)
    assert not marker.exists()
    # a config naming a callable outside Keras as a layer class
    (tmp_path/'os').mkdir()
    with zipfile.ZipFile(tmp_path/'os'/'model.keras', 'w') as z:
        z.writestr('config.json', json.dumps({'module': 'os', 'class_name': 'system', 'config': {'command': f'touch {marker}'}}))
    with pytest.raises(UntrustedModel, match='os.system \\(can run code'): load_model(tmp_path/'os', 'keras')
    assert not marker.exists()

# --- concurrent registrations from several processes ---

_REGISTER = """
import sys
from pathlib import Path
from medmaas_nb.registry import Registry
reg = Registry(Path(sys.argv[1]))
for _ in range(int(sys.argv[3])): reg.register('toy', Path(sys.argv[2]), {'task': 'toy'}, aliases=['production'])
"""

def test_concurrent_registrations_leave_production_on_the_newest(tmp_path):
    "Three processes registering at once, five rounds: `production` always ends on the highest version."
    from sklearn.linear_model import RidgeCV
    X = np.random.default_rng(0).normal(size=(20, 3)); save_model(RidgeCV().fit(X, X.sum(1)), tmp_path/'model')
    Registry(tmp_path/'warm').register('toy', tmp_path/'model', {'task': 'toy'})  # the signing key exists before the race
    for r in range(5):
        root = tmp_path/f'r{r}'
        ps = [subprocess.Popen([sys.executable, '-c', _REGISTER, str(root), str(tmp_path/'model'), '6']) for _ in range(3)]
        assert all(p.wait(120) == 0 for p in ps)
        reg = Registry(root)
        assert reg.versions('toy') == list(range(1, 19)) and reg.aliases('toy') == {'production': 18}
