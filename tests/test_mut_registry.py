"""Registry trust checks case by case: the type allowlists, what counts as running code, signing keys and signatures, the
exact file set of a version, version and alias lookup (fast: a two-coefficient model, temporary folders)."""
import hashlib, hmac, io, json, os, stat, zipfile
from pathlib import Path
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from medmaas_nb import registry as R, runtimes as RT
from medmaas_nb.registry import (Registry, RegistryError, ModelNotFound, TamperedModel, UntrustedModel, signing_key_file, signing_key,
                                 key_id, sign, SIGNATURE, _sums, _read_card)
from medmaas_nb.runtimes import (MODEL_TYPES, KERAS_TYPES, runs_code, skops_types, check_types, keras_types, check_keras, model_types,
                                 load_model, save_model, KerasRuntime, SklearnRuntime, _short)

def msg(exc_type, fn, *a, **k):
    with pytest.raises(exc_type) as e: fn(*a, **k)
    return str(e.value)

# --- names that run code ---
@pytest.mark.parametrize('name', ['builtins.exec', 'builtins.eval', 'builtins.getattr', 'os.system', 'posix.system', 'subprocess.Popen',
                                  'pathlib.Path', 'numpy.load', 'numpy.lib.npyio.load', 'operator.attrgetter', 'pandas.read_csv',
                                  'pandas.DataFrame.to_pickle', 'pandas.io.parsers.read_csv', 'mylib.PickleJar', 'x.cPickle.loads',
                                  'pandas.core.frame.DataFrame.to_csv', 'joblib.load', 'functools.reduce'])
def test_runs_code(name): assert runs_code(name)

@pytest.mark.parametrize('name', ['builtins.dict', 'builtins.str', 'numpy.ndarray', 'sklearn.linear_model._base.LinearRegression',
                                  'pandas.core.frame.DataFrame', 'pandas.read', 'pandas.core.frame.DataFrame.readme',
                                  'mypandas.read_csv', 'osx.thing', 'operator.add', 'numpy.log1p',
                                  'keras.layers.Dense', 'medmaas_nb.text.QACues'])
def test_does_not_run_code(name): assert not runs_code(name)

# --- skops schemas ---
def skops_bytes(schema)->bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as z: z.writestr('schema.json', json.dumps(schema))
    return out.getvalue()

def node(mod, cls, loader='ObjectNode', **kw): return {'__module__': mod, '__class__': cls, '__loader__': loader, **kw}

def test_skops_types_reads_every_node(tmp_path):
    schema = node('sklearn.pipeline', 'Pipeline', content={'steps': [node('numpy', 'ndarray', 'NdArrayNode'),
                  {'x': [node('builtins', 'list', 'ListNode', content=[node('os', 'system', 'FunctionNode')])]}],
                  'm': node('medmaas_nb.text', 'QACues', 'MethodNode', content={'func': 'transform', 'obj': node('builtins', 'int')}),
                  'plain': {'__module__': 'not.a.node'}, 'n': 3, 's': 'text'})
    data = skops_bytes(schema)
    want = {'sklearn.pipeline.Pipeline', 'numpy.ndarray', 'builtins.list', 'os.system', 'medmaas_nb.text.QACues',
            'medmaas_nb.text.QACues.transform', 'builtins.int'}
    assert skops_types(data) == want
    (tmp_path/'m.skops').write_bytes(data)
    assert skops_types(tmp_path/'m.skops') == want
    assert skops_types(skops_bytes(node('a', 'B', 'MethodNode'))) == {'a.B', 'a.B.None'}
    assert skops_types(skops_bytes(node('a', 'B', 'MethodNode', content=None))) == {'a.B', 'a.B.None'}
    assert skops_types(skops_bytes([node('a', 'B'), 'x', 1])) == {'a.B'}

@pytest.mark.parametrize('bad', [b'not a zip', skops_bytes({})[:-10]])
def test_skops_types_refuses_what_is_not_a_skops_file(bad):
    assert msg(UntrustedModel, skops_types, bad).startswith('Not a skops file: no readable schema.json (BadZipFile')

def test_skops_types_refuses_a_zip_without_a_schema_or_with_bad_json(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as z: z.writestr('other.json', '{}')
    assert msg(UntrustedModel, skops_types, out.getvalue()) == 'Not a skops file: no readable schema.json (KeyError).'
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as z: z.writestr('schema.json', '{x')
    assert msg(UntrustedModel, skops_types, out.getvalue()) == 'Not a skops file: no readable schema.json (JSONDecodeError).'
    assert msg(UntrustedModel, skops_types, tmp_path/'missing.skops') == 'Not a skops file: no readable schema.json (FileNotFoundError).'

@pytest.mark.parametrize('n', [node(None, 'B'), node('a', None), node('a', 3), {'__loader__': 'ObjectNode'}])
def test_skops_types_refuses_a_node_without_names(n):
    assert msg(UntrustedModel, skops_types, skops_bytes({'k': [n]})) == 'Malformed skops schema: a node without a module and class name.'

def test_check_types():
    ok = {'builtins.dict', 'numpy.ndarray'}
    assert check_types(ok, 'm v1') is None and check_types(ok, 'm v1', sorted(ok) + ['builtins.int']) is None
    assert msg(UntrustedModel, check_types, ok | {'foo.Bar'}, 'm v1') == \
        'm v1: refused, it names foo.Bar (outside the types this project trusts). Nothing was loaded.'
    # names that run code come first, and say so
    assert msg(UntrustedModel, check_types, ok | {'aaa.Zed', 'os.system'}, 'm v1') == \
        'm v1: refused, it names os.system, aaa.Zed (can run code or touch files). Nothing was loaded.'
    assert msg(UntrustedModel, check_types, ok, 'm v2', ['builtins.dict']) == \
        'm v2: refused, it names numpy.ndarray (not in the types its card recorded at registration). Nothing was loaded.'
    assert msg(UntrustedModel, check_types, ok, 'm', []).startswith('m: refused, it names builtins.dict, numpy.ndarray (not in the types')
    many = {f'x{i}.Y' for i in range(7)}
    assert msg(UntrustedModel, check_types, many, 'm') == \
        'm: refused, it names x0.Y, x1.Y, x2.Y, x3.Y and 3 more (outside the types this project trusts). Nothing was loaded.'
    four = {f'x{i}.Y' for i in range(4)}
    assert msg(UntrustedModel, check_types, four, 'm') == 'm: refused, it names x0.Y, x1.Y, x2.Y, x3.Y (outside the types this project trusts). Nothing was loaded.'
    long = msg(UntrustedModel, check_types, {'a' * 200 + '.B'}, 'w' * 300)
    assert long.startswith('w' * 120 + ': refused, it names ' + 'a' * 80 + ' (outside') and len(long) <= 400

def test_short():
    assert _short('x' * 400) == 'x' * 400 and _short('x' * 401) == 'x' * 397 + '...' and _short('abcdef', 5) == 'ab...'

# --- Keras configs ---
def keras_file(tmp_path, cfg, name='m.keras')->Path:
    p = tmp_path/name
    with zipfile.ZipFile(p, 'w') as z: z.writestr('config.json', json.dumps(cfg))
    return p

def test_keras_types(tmp_path):
    cfg = {'module': 'keras.src.models.functional', 'class_name': 'Functional', 'config': {'layers': [
        {'module': 'keras.layers', 'class_name': 'Dense', 'config': {'kernel_initializer': {'module': 'keras.initializers', 'class_name': 'GlorotUniform'}}},
        {'module': None, 'class_name': '__keras_tensor__'},
        {'module': 'medmaas_nb.core', 'class_name': 'ViewStack', 'registered_name': 'medmaas_nb>ViewStack'},
        {'module': 'keras.layers', 'class_name': 'Dense', 'registered_name': 'Dense'},
        {'module': 'builtins', 'class_name': 'function', 'config': 'exec'},
        {'class_name': 3}, 'text', [{'module': 'keras.layers', 'class_name': 'Flatten'}]]}}
    assert keras_types(keras_file(tmp_path, cfg)) == {'keras.src.models.functional.Functional', 'keras.layers.Dense', 'keras.initializers.GlorotUniform',
                                                      '__keras_tensor__', 'medmaas_nb.core.ViewStack', 'medmaas_nb>ViewStack',
                                                      'builtins.exec', 'keras.layers.Flatten'}
    p = tmp_path/'bad.keras'; p.write_bytes(b'nope')
    assert msg(UntrustedModel, keras_types, p) == 'Not a .keras file: no readable config.json (BadZipFile).'
    with zipfile.ZipFile(tmp_path/'e.keras', 'w') as z: z.writestr('x', '1')
    assert msg(UntrustedModel, keras_types, tmp_path/'e.keras') == 'Not a .keras file: no readable config.json (KeyError).'

def test_check_keras():
    ok = {'keras.layers.Dense', '__keras_tensor__'}
    assert check_keras(ok, 'k') is None and check_keras(ok, 'k', sorted(ok)) is None
    assert msg(UntrustedModel, check_keras, ok | {'builtins.exec', 'a.B'}, 'k v1') == \
        'k v1: refused, it names builtins.exec, a.B (can run code or touch files). Nothing was loaded.'
    assert msg(UntrustedModel, check_keras, ok | {'keras.layers.Lambda'}, 'k') == \
        'k: refused, it names keras.layers.Lambda (outside the layers this project trusts). Nothing was loaded.'
    assert msg(UntrustedModel, check_keras, ok, 'k', ['__keras_tensor__']) == \
        'k: refused, it names keras.layers.Dense (not in the types its card recorded at registration). Nothing was loaded.'
    assert 'x' * 121 not in msg(UntrustedModel, check_keras, {'a.B'}, 'x' * 300)

def test_check_keras_refuses_an_allowlisted_name_that_runs_code(monkeypatch):
    monkeypatch.setattr(RT, 'KERAS_TYPES', KERAS_TYPES | {'os.system'})
    assert 'os.system (can run code' in msg(UntrustedModel, check_keras, {'os.system'}, 'k')

# --- saved models ---
@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp('model')
    m = LinearRegression().fit(np.array([[0.0], [1.0], [2.0]]), np.array([1.0, 3.0, 5.0]))
    assert save_model(m, d) == [d/'model.skops']
    return d

def test_model_types_and_load(saved, tmp_path):
    types = model_types(saved)
    assert types == sorted(types) and 'sklearn.linear_model._base.LinearRegression' in types
    m = load_model(saved, registered=types)
    assert m.predict(np.array([[3.0]])) == pytest.approx([7.0])
    assert load_model(saved).coef_ == pytest.approx([2.0])
    assert msg(UntrustedModel, load_model, saved, registered=['builtins.dict'], where='lin v3').startswith('lin v3: refused, it names ')
    assert msg(UntrustedModel, load_model, saved, registered=['builtins.dict']).startswith(f'{saved}: refused')
    assert msg(ModelNotFound, model_types, tmp_path) == f'No model.skops in {tmp_path}.'
    assert msg(ModelNotFound, model_types, tmp_path, 'keras') == f'No model.keras in {tmp_path}.'
    assert msg(ModelNotFound, load_model, tmp_path) == f'No model.skops in {tmp_path}.'
    assert msg(ModelNotFound, load_model, tmp_path, 'keras') == f'No model.keras in {tmp_path}.'
    assert msg(ValueError, model_types, saved, 'torch') == "Unknown runtime 'torch'; expected sklearn or keras."
    assert msg(ValueError, load_model, saved, 'torch') == "Unknown runtime 'torch'; expected sklearn or keras."

def test_keras_model_types_and_refusal(tmp_path):
    keras_file(tmp_path, {'module': 'keras.layers', 'class_name': 'Lambda'}, 'model.keras')
    assert model_types(tmp_path, 'keras') == ['keras.layers.Lambda']
    assert 'keras.layers.Lambda (outside the layers' in msg(UntrustedModel, load_model, tmp_path, 'keras', where='k')

def test_skops_refusal_is_reported(saved, monkeypatch):
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException
    def refuse(data, trusted): raise UntrustedTypesFoundException(['x.Y'])
    monkeypatch.setattr(sio, 'loads', refuse)
    assert msg(UntrustedModel, load_model, saved, where='w v1').startswith('w v1: refused by skops: ')

# --- signing keys and signatures ---
def test_signing_key_file(tmp_path, monkeypatch):
    monkeypatch.setenv('MEDMAAS_SIGNING_KEY_FILE', '~/k.key'); monkeypatch.setenv('HOME', str(tmp_path))
    assert signing_key_file() == tmp_path/'k.key'
    monkeypatch.delenv('MEDMAAS_SIGNING_KEY_FILE'); monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path/'cfg'))
    assert signing_key_file() == tmp_path/'cfg'/'medmaas_nb'/'signing.key'
    monkeypatch.delenv('XDG_CONFIG_HOME')
    assert signing_key_file() == tmp_path/'.config'/'medmaas_nb'/'signing.key'
    monkeypatch.setenv('MEDMAAS_SIGNING_KEY_FILE', '')
    assert signing_key_file() == tmp_path/'.config'/'medmaas_nb'/'signing.key'

def test_signing_key_created_private(tmp_path, monkeypatch):
    p = tmp_path/'a'/'b'/'signing.key'
    assert msg(RegistryError, signing_key, p).startswith(f'No signing key at {p}, so no version can be verified.')
    k = signing_key(p, create=True)
    assert len(k) == 64 and bytes.fromhex(k.decode()) and stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_bytes() == k + b'\n'
    assert signing_key(p) == k and signing_key(p, create=True) == k
    assert [f.name for f in p.parent.iterdir()] == ['signing.key']  # no temporary file left
    monkeypatch.setenv('MEDMAAS_SIGNING_KEY_FILE', str(p)); assert signing_key() == k

def test_signing_key_refusals(tmp_path):
    p = tmp_path/'k'; p.write_bytes(b'x' * 64); os.chmod(p, 0o640)
    assert msg(RegistryError, signing_key, p) == f'The signing key {p} is readable by others (mode 640); run: chmod 600 {p}'
    os.chmod(p, 0o604); assert 'mode 604' in msg(RegistryError, signing_key, p)
    os.chmod(p, 0o600); p.write_bytes(b'x' * 31 + b'\n')
    assert msg(RegistryError, signing_key, p) == f'The signing key {p} is too short (31 bytes; expected 64 hex digits).'
    p.write_bytes(b'  ' + b'y' * 32 + b'\n\n'); assert signing_key(p) == b'y' * 32
    reg = tmp_path/'reg'; inside = reg/'keys'/'signing.key'
    assert msg(RegistryError, signing_key, inside, True, reg).startswith(f'The signing key {inside} is inside the registry {reg}')
    assert not inside.exists()
    assert signing_key(p, registry=reg) == b'y' * 32

def test_key_id_and_sign():
    k = b'k' * 64
    assert key_id(k) == hashlib.sha256(k).hexdigest()[:12]
    s = sign(k, 'task', 3, b'abc  model/x\n')
    assert s == f"hmac-sha256 {key_id(k)} {hmac.new(k, b'medmaas-registry-v1' + bytes([0]) + b'task' + bytes([0]) + b'3' + bytes([0]) + b'abc  model/x' + bytes([10]), hashlib.sha256).hexdigest()}"
    assert sign(k, 'task', '3', b'abc  model/x\n') == s
    assert len({s, sign(k, 'task', 4, b'abc  model/x\n'), sign(k, 'tas', 3, b'kabc  model/x\n'), sign(b'j' * 64, 'task', 3, b'abc  model/x\n')}) == 4

def test_sums_list_every_file_but_the_digests(tmp_path):
    (tmp_path/'model').mkdir(); (tmp_path/'model'/'b.bin').write_bytes(b'b'); (tmp_path/'a.json').write_text('{}')
    (tmp_path/'SHA256SUMS').write_text('x'); (tmp_path/SIGNATURE).write_text('y')
    assert _sums(tmp_path) == f"{hashlib.sha256(b'{}').hexdigest()}  a.json\n{hashlib.sha256(b'b').hexdigest()}  model/b.bin\n"

def test_read_card(tmp_path):
    assert _read_card(tmp_path) == {}
    (tmp_path/'model').mkdir(); (tmp_path/'card.json').write_text('{"a": 1}'); assert _read_card(tmp_path) == {}  # beside the model: not the card
    (tmp_path/'model'/'card.json').write_text('{x'); assert _read_card(tmp_path) == {}
    (tmp_path/'model'/'card.json').write_text('{"a": 1}'); assert _read_card(tmp_path) == {'a': 1}

# --- registered versions ---
@pytest.fixture
def reg(tmp_path, saved):
    r = Registry(tmp_path/'registry', key_file=tmp_path/'keys'/'signing.key')
    return r

def test_register_verify_and_load(reg, saved, tmp_path):
    assert reg.tasks() == [] and reg.versions('lin') == [] and reg.aliases('lin') == {}
    mv = reg.register('lin', saved, {'model': {'runtime': 'sklearn'}, 'x': 1}, aliases=['production'])
    assert (mv.task, mv.version, mv.path) == ('lin', 1, reg.root/'cache'/'lin'/f'1-{mv.run_id[:12]}') and mv.model_dir == mv.path/'model'
    from mlflow.tracking import MlflowClient
    tags = MlflowClient(reg.tracking_uri, registry_uri=reg.tracking_uri).get_model_version('lin', '1').tags
    assert tags[R.SUMS_TAG] == (mv.path/'SHA256SUMS').read_text() and tags[R.SIGNATURE_TAG] + '\n' == (mv.path/SIGNATURE).read_text()
    assert mv.uri == 'models:/lin/1' and reg.tracking_uri == f"sqlite:///{reg.root/'mlflow.db'}"
    assert mv.card['x'] == 1 and mv.card['name'] == 'lin' and mv.card['version'] == 1 and mv.card['model']['types'] == model_types(saved)
    assert mv.runtime == 'sklearn' and reg.aliases('lin') == {'production': 1} and reg.tasks() == ['lin']
    mv.verify()
    model, card = reg.load('lin')
    assert model.predict(np.array([[1.0]])) == pytest.approx([3.0]) and card == mv.card
    assert (mv.path/SIGNATURE).read_text() == sign(signing_key(tmp_path/'keys'/'signing.key'), 'lin', 1, (mv.path/'SHA256SUMS').read_bytes()) + '\n'
    mv2 = reg.register('lin', saved, {})
    assert mv2.version == 2 and reg.versions('lin') == [1, 2] and mv2.runtime == 'sklearn'
    assert reg.get('lin').version == 1  # production
    reg.set_alias('lin', 'production', 2); reg.set_alias('lin', 'staging', 1)
    assert reg.get('lin').version == 2 and reg.get('lin', 'staging').version == 1 and reg.get('lin', '1').version == 1
    assert reg.get('lin', 2).version == 2 and reg.aliases('lin') == {'production': 2, 'staging': 1}
    assert not list(reg.root.glob('.incoming-*'))

def test_get_refusals(reg, saved):
    assert msg(ModelNotFound, reg.get, 'lin') == "No registered model for task 'lin'. Run `medmaas run lin` first."
    reg.register('lin', saved, {})
    assert msg(ModelNotFound, reg.get, 'other') == "No registered model for task 'other'. Run `medmaas run other` first. Registered: lin."
    assert reg.get('lin').version == 1  # no production alias: the newest
    reg.register('lin', saved, {}); assert reg.get('lin').version == 2
    assert msg(ModelNotFound, reg.get, 'lin', 'gold') == "lin has no alias 'gold'; aliases: []."
    assert msg(ModelNotFound, reg.get, 'lin', 7) == 'lin has no version 7; versions: [1, 2].'
    assert msg(ModelNotFound, reg.get, 'lin', '7') == 'lin has no version 7; versions: [1, 2].'
    assert msg(ModelNotFound, reg.set_alias, 'lin', 'production', 9) == 'lin has no version 9; versions: [1, 2].'
    (reg.root/'cache'/'lin'/'notes').mkdir(parents=True); (reg.root/'cache'/'empty').mkdir(); (reg.root/'loose.txt').write_text('')
    assert reg.versions('lin') == [1, 2] and reg.tasks() == ['lin']

def test_registering_a_model_outside_the_allowlist_leaves_no_version(reg, tmp_path):
    d = tmp_path/'evil'; d.mkdir(); (d/'model.skops').write_bytes(skops_bytes(node('os', 'system', 'FunctionNode')))
    assert msg(UntrustedModel, reg.register, 'lin', d, {}).startswith('lin (registering evil): refused, it names os.system')
    assert reg.versions('lin') == [] and not list(reg.root.glob('.incoming-*'))
    keras_file(d, {'module': 'keras.layers', 'class_name': 'Lambda'}, 'model.keras')
    assert 'keras.layers.Lambda' in msg(UntrustedModel, reg.register, 'lin', d, {'model': {'runtime': 'keras'}})

@pytest.fixture
def version(reg, saved):
    return reg.register('lin', saved, {'model': {'runtime': 'sklearn'}})

def test_a_changed_file_is_refused(version):
    p = version.model_dir/'model.skops'; p.write_bytes(p.read_bytes() + b'\0')
    m = msg(TamperedModel, version.verify)
    assert m.startswith('lin v1: model/model.skops has changed since it was registered (sha256 ') and m.endswith('...). Refusing to load it.')
    with pytest.raises(TamperedModel): version.load()

def test_an_extra_or_missing_file_is_refused(version):
    (version.model_dir/'extra.bin').write_bytes(b'x')
    assert msg(TamperedModel, version.verify) == 'lin v1: files that were not registered: model/extra.bin. Refusing to load it.'
    (version.model_dir/'extra.bin').unlink(); (version.model_dir/'sub').mkdir()
    version.verify()  # an empty folder holds nothing
    (version.model_dir/'link').symlink_to(version.model_dir/'model.skops')
    assert 'not registered: model/link' in msg(TamperedModel, version.verify)
    (version.model_dir/'link').unlink(); (version.model_dir/'model.skops').unlink()
    assert msg(TamperedModel, version.verify) == 'lin v1: model/model.skops is missing. Refusing to load it.'
    (version.model_dir/'model.skops').mkdir()
    assert msg(TamperedModel, version.verify) == 'lin v1: model/model.skops is missing. Refusing to load it.'

def test_rewritten_digests_or_signature_are_refused(version, reg, tmp_path):
    sums = version.path/'SHA256SUMS'; good = sums.read_bytes()
    sums.write_bytes(good.replace(b'model/model.skops', b'model/model.skops '))
    assert msg(TamperedModel, version.verify) == 'lin v1: the signature of its digests does not match. SHA256SUMS or its signature was rewritten. Refusing to load it.'
    sums.write_bytes(good); sig = version.path/SIGNATURE; s = sig.read_text()
    sig.write_text(s.replace(' ', '  ')); version.verify()  # the signature's words, not its spacing
    other = tmp_path/'other.key'; other.write_bytes(b'o' * 64); os.chmod(other, 0o600)
    mv = R.ModelVersion('lin', 1, version.path, version.card, other)
    assert msg(TamperedModel, mv.verify) == (f"lin v1: the signature of its digests does not match. It names key {s.split()[1]!r}, yours is "
                                             f"{key_id(b'o' * 64)!r}: a team sharing a registry must share one key file. Refusing to load it.")
    sig.write_text(f'hmac-sha256 {key_id(b"o" * 64)} {"0" * 64}\n')
    assert 'SHA256SUMS or its signature was rewritten' in msg(TamperedModel, mv.verify)
    sig.write_text('hmac-sha256 abc\n')
    assert 'SHA256SUMS or its signature was rewritten' in msg(TamperedModel, version.verify)
    sig.unlink()
    assert msg(TamperedModel, version.verify).startswith("lin v1: unsigned (registered without medmaas_nb, or its signature was removed). "
                                                         "Refusing to load it. If you trust its files, register them again: Registry().register('lin', <its model folder>, card).")
    sums.unlink()
    assert msg(TamperedModel, version.verify) == 'lin v1: SHA256SUMS is missing. Refusing to load it.'

def test_a_card_edited_after_signing_is_refused_and_load_uses_the_signed_card(version):
    c = json.loads((version.model_dir/'card.json').read_text()); c['model']['types'] = ['builtins.dict']
    (version.model_dir/'card.json').write_text(json.dumps(c))
    assert 'card.json has changed' in msg(TamperedModel, version.verify)
    version.card['model']['types'] = ['builtins.dict']  # the card in memory is not what load trusts
    (version.model_dir/'card.json').write_text(json.dumps({**c, 'model': {'runtime': 'sklearn', 'types': model_types(version.model_dir)}}))
    R.Registry(version.path.parents[2], version.key_file).seal(version.path, 'lin', 1)
    assert version.load().coef_ == pytest.approx([2.0])
    c2 = json.loads((version.model_dir/'card.json').read_text()); c2['model']['types'] = ['builtins.dict']
    (version.model_dir/'card.json').write_text(json.dumps(c2)); R.Registry(version.path.parents[2], version.key_file).seal(version.path, 'lin', 1)
    assert msg(UntrustedModel, version.load).startswith('lin v1: refused, it names ')
    c2['model'] = {'runtime': 'sklearn'}; (version.model_dir/'card.json').write_text(json.dumps(c2))
    R.Registry(version.path.parents[2], version.key_file).seal(version.path, 'lin', 1)
    assert 'not in the types its card recorded' in msg(UntrustedModel, version.load)  # no types recorded: none trusted

def test_the_registry_refuses_a_key_inside_it(tmp_path, saved):
    r = Registry(tmp_path/'registry', key_file=tmp_path/'registry'/'signing.key')
    assert 'is inside the registry' in msg(RegistryError, r.register, 'lin', saved, {})
    assert r.versions('lin') == []

# --- details the checks above leave open ---
def test_long_lists_of_refused_names_are_cut(tmp_path):
    five = {f'x{i}.Y' for i in range(5)}
    assert msg(UntrustedModel, check_types, five, 'm') == 'm: refused, it names x0.Y, x1.Y, x2.Y, x3.Y and 1 more (outside the types this project trusts). Nothing was loaded.'
    names = {'a' * 100 + '.B'} | {f'x{i}.Y' for i in range(4)}
    assert msg(UntrustedModel, check_keras, names, 'k') == \
        f"k: refused, it names {'a' * 80}, x0.Y, x1.Y, x2.Y and 1 more (outside the layers this project trusts). Nothing was loaded."

class FakeKeras:
    "Stands in for `keras` in `load_model`: records how the model file was opened."
    def __init__(self): self.calls = []; self.models = self
    def load_model(self, *a, **k): self.calls.append((a, k)); return 'keras model'

@pytest.fixture
def fake_keras(monkeypatch):
    import medmaas_nb.core as core
    fk = FakeKeras(); monkeypatch.setattr(core, 'keras', lambda: fk)
    return fk

KERAS_OK = {'module': 'keras.src.models.functional', 'class_name': 'Functional', 'config': {'layers': [{'module': 'keras.layers', 'class_name': 'Dense'}]}}

def test_keras_models_load_in_safe_mode_after_the_checks(tmp_path, fake_keras):
    p = keras_file(tmp_path, KERAS_OK, 'model.keras')
    assert load_model(tmp_path, 'keras') == 'keras model'
    assert fake_keras.calls == [((p,), {'safe_mode': True, 'compile': False})]
    types = model_types(tmp_path, 'keras')
    assert types == ['keras.layers.Dense', 'keras.src.models.functional.Functional']
    assert load_model(tmp_path, 'keras', registered=types) == 'keras model'
    assert 'keras.layers.Dense (not in the types its card recorded' in msg(UntrustedModel, load_model, tmp_path, 'keras', ['keras.src.models.functional.Functional'])

def test_a_keras_version_registers_and_loads(reg, tmp_path, fake_keras, monkeypatch):
    d = tmp_path/'k'; d.mkdir(); keras_file(d, KERAS_OK, 'model.keras')
    def as_mlflow_model(model, path, *a):  # the fake model cannot be saved: lay out its file as the Keras flavour does
        assert model == 'keras model'
        (path/'data').mkdir(parents=True); (path/'data'/'model.keras').write_bytes((d/'model.keras').read_bytes()); (path/'MLmodel').write_text('flavors: {}')
    monkeypatch.setattr(KerasRuntime, 'save_mlflow', staticmethod(as_mlflow_model))
    monkeypatch.setattr(KerasRuntime, 'describe', staticmethod(lambda model: {'views': 1}))
    mv = reg.register('net', d, {'model': {'runtime': 'keras', 'chosen': 'cnn'}})
    assert (mv.model_dir/'data'/'model.keras').read_bytes() == (d/'model.keras').read_bytes()
    assert mv.runtime == 'keras' and mv.card['model'] == {'runtime': 'keras', 'chosen': 'cnn', 'types': model_types(d, 'keras')} and mv.card['served'] == {'views': 1}
    assert mv.load() == 'keras model' and reg.load('net')[0] == 'keras model'

def test_skops_trusts_exactly_the_checked_names(saved, monkeypatch):
    import skops.io as sio
    seen, real = [], sio.loads
    monkeypatch.setattr(sio, 'loads', lambda data, trusted: seen.append(trusted) or real(data, trusted=trusted))
    load_model(saved)
    assert seen == [model_types(saved)]

def test_signing_key_messages_and_an_existing_folder(tmp_path, caplog):
    p = tmp_path/'signing.key'
    assert msg(RegistryError, signing_key, p) == (f'No signing key at {p}, so no version can be verified. Copy the key the models were '
                                                  'registered with there (mode 0600), or set MEDMAAS_SIGNING_KEY_FILE.')
    inside = tmp_path/'k'
    assert msg(RegistryError, signing_key, inside, True, tmp_path) == (f'The signing key {inside} is inside the registry {tmp_path}: whoever '
                                                                      'rewrites the registry could re-sign it. Keep it elsewhere (MEDMAAS_SIGNING_KEY_FILE).')
    with caplog.at_level('WARNING', logger='medmaas_nb.registry'): signing_key(p, create=True)  # in a folder that exists
    assert [r.getMessage() for r in caplog.records if r.name == 'medmaas_nb.registry'] == \
        [f'created the registry signing key {p}: share it (mode 0600) with everyone who registers or serves models']

def test_the_signing_key_is_written_beside_its_place_then_linked(tmp_path, monkeypatch):
    made, real = [], R.tempfile.mkstemp
    monkeypatch.setattr(R.tempfile, 'mkstemp', lambda **k: made.append(real(**k)) or made[-1])
    p = tmp_path/'keys'/'signing.key'; signing_key(p, create=True)
    tmp = Path(made[0][1])
    assert tmp.parent == p.parent and tmp.name.startswith('.') and not tmp.exists()

def test_of_two_processes_creating_the_signing_key_one_wins(tmp_path, monkeypatch):
    p = tmp_path/'signing.key'; p.write_bytes(b'w' * 64 + b'\n'); os.chmod(p, 0o600)
    class Late(type(p)):
        def exists(self): return False  # the other process wrote it after our check
    monkeypatch.setattr(R, 'Path', Late)
    assert signing_key(p, create=True) == b'w' * 64 and [f.name for f in tmp_path.iterdir()] == ['signing.key']

def test_verify_messages_cut_long_names(version, tmp_path):
    sums = version.path/'SHA256SUMS'
    for i in range(4): (version.model_dir/f"{i}{'e' * 100}").write_bytes(b'x')
    assert msg(TamperedModel, version.verify) == \
        f"lin v1: files that were not registered: model/0{'e' * 73}, model/1{'e' * 73}, model/2{'e' * 73}. Refusing to load it."
    for i in range(4): (version.model_dir/f"{i}{'e' * 100}").unlink()
    p = version.model_dir/'model.skops'; old = hashlib.sha256(p.read_bytes()).hexdigest(); p.write_bytes(b'changed')
    assert msg(TamperedModel, version.verify) == (f'lin v1: model/model.skops has changed since it was registered (sha256 '
                                                  f"{hashlib.sha256(b'changed').hexdigest()[:12]}..., expected {old[:12]}...). Refusing to load it.")
    sig = version.path/SIGNATURE; sig.write_text(f"hmac-sha256 {'k' * 20} {'0' * 64}\n")
    assert f"It names key {'k' * 12!r}, yours is" in msg(TamperedModel, version.verify)
    long = R.ModelVersion('t' * 100, 1, version.path, {}, version.key_file); sig.unlink()
    assert f"Registry().register({'t' * 60!r}, <its model folder>, card)." in msg(TamperedModel, long.verify)

def test_file_names_with_spaces_verify(reg, saved, tmp_path):
    mv = reg.register('lin', saved, {}); (mv.model_dir/'notes on it.txt').write_text('n')
    reg.seal(mv.path, 'lin', 1); mv.verify()
    (mv.model_dir/'notes on it.txt').write_text('m')
    assert 'model/notes on it.txt has changed' in msg(TamperedModel, mv.verify)

def test_registration_record_and_lookup_details(reg, saved):
    mv = reg.register('lin', saved, {'model': {'runtime': 'sklearn', 'chosen': 'ridge'}})
    import datetime as dt
    at = dt.datetime.fromisoformat(mv.card['registered_at'])
    assert at.utcoffset() == dt.timedelta(0) and abs((dt.datetime.now(dt.timezone.utc) - at).total_seconds()) < 60
    assert mv.card['model']['chosen'] == 'ridge' and mv.card['model']['runtime'] == 'sklearn'
    v2 = reg.register('lin', saved, {})  # no runtime on the card: scikit-learn
    assert 'runtime' not in v2.card['model'] and v2.load().coef_ == pytest.approx([2.0])
    reg.set_alias('lin', 'production', 1)
    assert reg.load('lin', 2)[1]['version'] == 2 and reg.load('lin')[1]['version'] == 1
    reg.register('abc', saved, {})
    assert msg(ModelNotFound, reg.get, 'zzz').endswith(' Registered: abc, lin.')

def test_a_signed_card_without_a_model_section_trusts_no_type(version):
    (version.model_dir/'card.json').write_text('{}'); R.Registry(version.path.parents[2], version.key_file).seal(version.path, 'lin', 1)
    assert 'not in the types its card recorded' in msg(UntrustedModel, version.load)

def test_a_failed_registration_raises_its_own_error_and_leaves_nothing(reg, saved, monkeypatch):
    incoming = []
    def save_then_fail(model, path, *a):
        incoming.append(Path(path).parent); import shutil; shutil.rmtree(Path(path).parent)  # even the scratch folder gone
        raise RuntimeError('disk full')
    with monkeypatch.context() as m:
        m.setattr(SklearnRuntime, 'save_mlflow', staticmethod(save_then_fail))
        assert msg(RuntimeError, reg.register, 'lin', saved, {}) == 'disk full'
    assert incoming[0].parent == reg.root and incoming[0].name.startswith('.incoming-')
    assert reg.versions('lin') == []
    def no_key(*a): raise RegistryError('no key')  # after MLflow created the version: it is deleted again
    monkeypatch.setattr(Registry, 'seal', no_key)
    assert msg(RegistryError, reg.register, 'lin', saved, {}) == 'no key'
    assert reg.versions('lin') == [] and not list(reg.root.glob('.incoming-*')) and not (reg.root/'cache').exists()
