"API keys, rate limits, the server secret and the audit log: the behaviour each check promises, case by case (fast; no server)."
import datetime as dt, hashlib, hmac, json, os, stat, types
import pytest
from medmaas_nb import security
from medmaas_nb.security import (KeyStore, RateLimiter, AuditLog, Unauthorized, Forbidden, RateLimited, KeysFileError,
                                 keys_file, server_secret)

def _mode(p): return stat.S_IMODE(os.stat(p).st_mode)

# --- the keys file ---
def test_keys_file_is_the_setting_or_beside_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv('MEDMAAS_REGISTRY_DIR', str(tmp_path/'reg'))
    monkeypatch.delenv('MEDMAAS_KEYS_FILE', raising=False)
    assert keys_file() == tmp_path/'reg'/'keys.json'
    monkeypatch.setenv('MEDMAAS_KEYS_FILE', str(tmp_path/'k.json'))
    assert keys_file() == tmp_path/'k.json'
    assert KeyStore().path == tmp_path/'k.json'
    monkeypatch.setenv('MEDMAAS_KEYS_FILE', '')  # empty: as if unset
    assert keys_file() == tmp_path/'reg'/'keys.json'

def test_a_created_key_is_stored_hashed_private_and_checked(tmp_path):
    ks = KeyStore(tmp_path/'keys.json')
    assert ks.list() == []  # no file yet: no keys
    key = ks.create('app-1')
    assert key.startswith('mm_') and len(key) == 46 and key != ks.create('app-2')
    stored = json.loads((tmp_path/'keys.json').read_text())
    assert stored['app-1']['sha256'] == hashlib.sha256(key.encode()).hexdigest() and stored['app-1']['scope'] == 'predict'
    assert key not in (tmp_path/'keys.json').read_text()
    created = dt.datetime.fromisoformat(stored['app-1']['created'])
    assert created.tzinfo is not None and abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 60
    assert created.microsecond == 0  # seconds
    assert _mode(tmp_path/'keys.json') == 0o600
    assert ks.check(key) == 'app-1' and ks.check(key, 'predict') == 'app-1'
    assert ks.list() == [{'name': 'app-1', 'scope': 'predict', 'created': stored['app-1']['created']},
                         {'name': 'app-2', 'scope': 'predict', 'created': stored['app-2']['created']}]

@pytest.mark.parametrize('name', ['a', 'A.b_c-9', 'x' * 64])
def test_key_names_allowed(tmp_path, name):
    ks = KeyStore(tmp_path/'keys.json'); ks.create(name)
    assert [k['name'] for k in ks.list()] == [name]

@pytest.mark.parametrize('name', ['', None, 'x' * 65, 'a b', 'a/b', 'é', 'a\n'])
def test_key_names_refused(tmp_path, name):
    with pytest.raises(ValueError, match=r'Key name .*use 1-64 letters, digits'): KeyStore(tmp_path/'keys.json').create(name)
    assert not (tmp_path/'keys.json').exists()

def test_refusals_quote_the_value_cut_short(tmp_path):
    ks = KeyStore(tmp_path/'keys.json')
    with pytest.raises(ValueError) as e: ks.create('a b')
    assert str(e.value) == "Key name 'a b': use 1-64 letters, digits, _ . or -."
    with pytest.raises(ValueError) as e: ks.create('y' * 200)
    assert str(e.value).startswith(f"Key name {'y' * 80!r}: use")
    with pytest.raises(ValueError) as e: ks.create('a', 'z' * 100)
    assert str(e.value) == f"Scope {'z' * 40!r}: expected one of ['predict', 'metrics', 'admin']."

def test_scopes_and_duplicates(tmp_path):
    ks = KeyStore(tmp_path/'keys.json')
    with pytest.raises(ValueError, match=r"Scope 'root': expected one of \['predict', 'metrics', 'admin'\]"): ks.create('a', 'root')
    for s in ('predict', 'metrics', 'admin'): ks.create(s, s)
    assert {k['name']: k['scope'] for k in ks.list()} == {'predict': 'predict', 'metrics': 'metrics', 'admin': 'admin'}
    with pytest.raises(ValueError, match="A key named 'admin' exists; revoke it first"): ks.create('admin', 'predict')
    assert {k['name']: k['scope'] for k in ks.list()}['admin'] == 'admin'

def test_revoke(tmp_path):
    ks = KeyStore(tmp_path/'keys.json'); a, b = ks.create('a'), ks.create('b')
    with pytest.raises(KeyError, match=r"No key named 'c'; keys: \['a', 'b'\]"): ks.revoke('c')
    ks.revoke('a')
    assert [k['name'] for k in ks.list()] == ['b']
    with pytest.raises(Unauthorized, match='Invalid API key'): ks.check(a)
    assert ks.check(b) == 'b'

@pytest.mark.parametrize('scope, allowed', [('predict', {'predict'}), ('metrics', {'metrics'}), ('admin', {'predict', 'metrics', 'admin'})])
def test_what_each_scope_may_do(tmp_path, scope, allowed):
    ks = KeyStore(tmp_path/'keys.json'); key = ks.create('k', scope)
    for need in ('predict', 'metrics', 'admin'):
        if need in allowed: assert ks.check(key, need) == 'k'
        else:
            with pytest.raises(Forbidden, match=f"The key 'k' has scope '{scope}'; this endpoint needs '{need}'"): ks.check(key, need)

@pytest.mark.parametrize('key', [None, ''])
def test_a_missing_key_is_unauthorized(tmp_path, key):
    with pytest.raises(Unauthorized) as e: KeyStore(tmp_path/'keys.json').check(key)
    assert str(e.value) == 'Missing API key: send the header "Authorization: Bearer <key>" (create one with `medmaas keys create NAME`).'

def test_the_keys_file_is_read_again_only_when_it_changes(tmp_path, monkeypatch):
    ks = KeyStore(tmp_path/'keys.json'); reads = []
    real = ks._read
    monkeypatch.setattr(ks, '_read', lambda: reads.append(1) or real())
    for _ in range(3):
        with pytest.raises(Unauthorized): ks.check('mm_x')
    assert reads == []  # no file, nothing to read
    key = KeyStore(tmp_path/'keys.json').create('a')
    for _ in range(3): ks.check(key)
    assert len(reads) == 1

def test_an_unknown_key_is_unauthorized(tmp_path):
    ks = KeyStore(tmp_path/'keys.json'); key = ks.create('a')
    with pytest.raises(Unauthorized, match='^Invalid API key.$'): ks.check(key + 'x')
    with pytest.raises(Unauthorized, match='^Invalid API key.$'): ks.check(hashlib.sha256(key.encode()).hexdigest())  # the hash is no key

def test_keys_changed_by_another_process_are_seen(tmp_path):
    mine, theirs = KeyStore(tmp_path/'keys.json'), KeyStore(tmp_path/'keys.json')
    with pytest.raises(Unauthorized): mine.check('mm_nothing')
    key = theirs.create('late')
    assert mine.check(key) == 'late'
    theirs.revoke('late')
    with pytest.raises(Unauthorized, match='Invalid API key'): mine.check(key)
    (tmp_path/'keys.json').unlink()
    with pytest.raises(Unauthorized, match='Invalid API key'): mine.check(key)

@pytest.mark.parametrize('text, match', [
    (b'{not json', 'is not valid JSON \\(JSONDecodeError\\); expected'),
    (b'\xff\xfe', 'is not valid JSON \\((JSONDecodeError|UnicodeDecodeError)\\)'),
    (b'[]', 'expected \\{name: \\{"sha256": ..., "scope": one of'),
    (b'{"a": "x"}', 'expected \\{name'),
    (b'{"a": {"sha256": 1, "scope": "predict"}}', 'expected \\{name'),
    (b'{"a": {"scope": "predict"}}', 'expected \\{name'),
    (b'{"a": {"sha256": "ab", "scope": "root"}}', 'expected \\{name'),
    (b'{"a": {"sha256": "ab"}}', 'expected \\{name'),
])
def test_a_broken_keys_file_refuses_every_key_until_mended(tmp_path, text, match):
    p = tmp_path/'keys.json'; ks = KeyStore(p); key = ks.create('ok', 'admin'); good = p.read_bytes()
    p.write_bytes(text)
    with pytest.raises(KeysFileError, match=match): ks.list()
    with pytest.raises(KeysFileError): ks.create('other')
    with pytest.raises(Unauthorized) as e: ks.check(key)
    assert str(e.value) == 'The service cannot read its keys file, so no key is accepted; tell the operator.'
    with pytest.raises(Unauthorized, match='cannot read its keys file'): ks.check('mm_other', 'admin')
    p.write_bytes(good)
    assert ks.check(key, 'admin') == 'ok'

def test_a_broken_keys_file_is_logged_once_naming_it(tmp_path, caplog):
    p = tmp_path/'keys.json'; p.write_text('[1]')
    ks = KeyStore(p)
    with caplog.at_level('ERROR', logger='medmaas_nb.security'):
        for _ in range(2):
            with pytest.raises(Unauthorized): ks.check('mm_x')
    msgs = [r.getMessage() for r in caplog.records if r.name == 'medmaas_nb.security']
    assert len(msgs) == 1 and msgs[0].startswith('every API key is refused until the keys file is mended: ')
    assert 'keys.json: expected {name' in msgs[0]

def test_a_valid_keys_file_with_every_scope_reads(tmp_path):
    p = tmp_path/'keys.json'
    p.write_text(json.dumps({n: {'sha256': hashlib.sha256(n.encode()).hexdigest(), 'scope': n} for n in ('predict', 'metrics', 'admin')}))
    ks = KeyStore(p)
    assert [k['created'] for k in ks.list()] == [None, None, None]
    assert ks.check('admin', 'admin') == 'admin' and ks.check('metrics', 'metrics') == 'metrics'

# --- rate limits ---
@pytest.fixture
def clock(monkeypatch):
    t = [100.0]
    monkeypatch.setattr(security, 'time', types.SimpleNamespace(monotonic=lambda: t[0]))
    return t

def test_bucket_sizes():
    assert RateLimiter().rate == 1000.0 and RateLimiter().burst == 2000.0
    assert RateLimiter(10).burst == 20.0 and RateLimiter(0.2).burst == 1.0 and RateLimiter(0.5).burst == 1.0
    assert RateLimiter(3, burst=5).burst == 5.0 and isinstance(RateLimiter(3).rate, float)
    assert RateLimiter(2).unit == 'requests' and RateLimiter(2, unit='rows').unit == 'rows'

def test_a_bucket_empties_and_refills(clock):
    rl = RateLimiter(rate=2, burst=4)
    for _ in range(4): rl.hit('a')
    with pytest.raises(RateLimited) as e: rl.hit('a')
    assert e.value.retry_after == pytest.approx(0.5)
    assert str(e.value) == 'Rate limit of 2 requests/s (bursts of 4) exceeded; retry in 1 s.'
    rl.hit('b', 4)  # another key has its own bucket
    clock[0] += 0.5; rl.hit('a')  # one token back after 1/rate s
    with pytest.raises(RateLimited): rl.hit('a')
    clock[0] += 100; rl.hit('a', 4)  # refills up to the burst, no further
    with pytest.raises(RateLimited): rl.hit('a', 0.5)

def test_a_refused_hit_takes_nothing(clock):
    rl = RateLimiter(rate=1, burst=10, unit='rows')
    rl.hit('k', 7)
    with pytest.raises(RateLimited) as e: rl.hit('k', 5)  # 3 left
    assert e.value.retry_after == pytest.approx(2.0) and 'Rate limit of 1 rows/s (bursts of 10) exceeded; retry in 2 s.' == str(e.value)
    rl.hit('k', 3)
    with pytest.raises(RateLimited): rl.hit('k', 1)
    clock[0] += 1; rl.hit('k', 1)

def test_a_cost_over_the_burst_waits_for_a_full_bucket(clock):
    rl = RateLimiter(rate=2, burst=4)
    with pytest.raises(RateLimited) as e: rl.hit('k', 10)
    assert e.value.retry_after == 0  # full bucket: waiting gives nothing more
    assert 'retry in 1 s' in str(e.value)  # never less than a second in the message
    rl.hit('k', 1)
    with pytest.raises(RateLimited) as e: rl.hit('k', 10)
    assert e.value.retry_after == pytest.approx(0.5)
    rl.hit('k', 3)
    with pytest.raises(RateLimited) as e: rl.hit('k', 1)
    assert e.value.retry_after == pytest.approx(0.5)
    clock[0] += 0.25
    with pytest.raises(RateLimited) as e: rl.hit('k', 1)  # half a token back
    assert e.value.retry_after == pytest.approx(0.25)

def test_retry_in_rounds_the_wait(clock):
    rl = RateLimiter(rate=0.25, burst=1)
    rl.hit('k')
    with pytest.raises(RateLimited, match='retry in 4 s') as e: rl.hit('k')
    assert e.value.retry_after == pytest.approx(4.0)

def test_rate_limited_default_retry_after():
    assert RateLimited('x').retry_after == 1.0 and str(RateLimited('x', 3)) == 'x' and RateLimited('x', 3).retry_after == 3

# --- the server secret ---
def test_the_server_secret_is_created_once_private(tmp_path, monkeypatch):
    p = tmp_path/'a'/'b'/'audit.key'
    s = server_secret(p)
    assert len(s) == 32 and _mode(p) == 0o600 and server_secret(p) == s
    monkeypatch.setenv('MEDMAAS_AUDIT_KEY_FILE', str(p))
    assert server_secret() == s
    q = tmp_path/'other.key'
    assert server_secret(q) != s

def test_of_two_processes_creating_the_secret_one_wins(tmp_path, monkeypatch):
    p = tmp_path/'audit.key'; p.write_bytes(b'w' * 32)  # written by the other process after our check
    class Late(type(p)):
        def exists(self): return False
    monkeypatch.setattr(security, 'Path', Late)
    assert server_secret(p) == b'w' * 32 and p.read_bytes() == b'w' * 32

def test_the_server_secret_defaults_to_the_user_config(tmp_path, monkeypatch):
    monkeypatch.delenv('MEDMAAS_AUDIT_KEY_FILE', raising=False); monkeypatch.setenv('HOME', str(tmp_path))
    s = server_secret()
    assert (tmp_path/'.config'/'medmaas_nb'/'audit.key').read_bytes() == s

@pytest.mark.parametrize('n, ok', [(0, False), (15, False), (16, True)])
def test_a_short_server_secret_is_refused(tmp_path, n, ok):
    p = tmp_path/'audit.key'; p.write_bytes(b'k' * n)
    if ok: assert server_secret(p) == b'k' * n
    else:
        with pytest.raises(ValueError, match=f'holds {n} bytes; expected a secret of at least 16'): server_secret(p)

# --- the audit log ---
def test_the_audit_log_keeps_a_keyed_digest_and_one_line_per_record(tmp_path):
    p = tmp_path/'logs'/'today'/'audit.jsonl'
    a = AuditLog(p, secret=b's' * 32)
    d = a.digest(b'{"age": 93}')
    assert d == hmac.new(b's' * 32, b'{"age": 93}', hashlib.sha256).hexdigest()
    a.write(key='app', status=200, input_hmac=d); a.write(path=tmp_path)
    lines = p.read_text().splitlines()
    r = json.loads(lines[0])
    assert list(r) == ['time', 'key', 'status', 'input_hmac'] and r['key'] == 'app' and r['status'] == 200
    t = dt.datetime.fromisoformat(r['time'])
    assert t.tzinfo is not None and abs((dt.datetime.now(dt.timezone.utc) - t).total_seconds()) < 60
    assert len(r['time'].split('.')[1].split('+')[0]) == 3  # milliseconds
    assert json.loads(lines[1])['path'] == str(tmp_path) and len(lines) == 2
    assert _mode(p) == 0o600
    a.close()
    b = AuditLog(p, secret=b's' * 32); b.write(n=3); b.close()  # appends
    assert len(p.read_text().splitlines()) == 3

def test_the_audit_log_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv('MEDMAAS_KEYS_FILE', str(tmp_path/'k'/'keys.json'))
    monkeypatch.setenv('MEDMAAS_AUDIT_KEY_FILE', str(tmp_path/'audit.key'))
    monkeypatch.delenv('MEDMAAS_AUDIT_LOG', raising=False); monkeypatch.delenv('MEDMAAS_AUDIT_MAX_BYTES', raising=False)
    a = AuditLog()
    assert a.path == tmp_path/'k'/'audit.jsonl' and a.path.exists() and a.secret == server_secret(tmp_path/'audit.key')
    assert a.max_bytes == 50 << 20 and a.backups == 5
    a.close()
    monkeypatch.setenv('MEDMAAS_AUDIT_LOG', str(tmp_path/'x.jsonl')); monkeypatch.setenv('MEDMAAS_AUDIT_MAX_BYTES', '123')
    a = AuditLog(); assert a.path == tmp_path/'x.jsonl' and a.max_bytes == 123; a.close()
    a = AuditLog(max_bytes=7); assert a.max_bytes == 7; a.close()

def test_the_audit_log_rotates_by_size_and_keeps_its_backups(tmp_path):
    p = tmp_path/'audit.jsonl'
    a = AuditLog(p, secret=b's' * 32, max_bytes=200, backups=3)
    for i in range(12): a.write(i=i, pad='x' * 60)  # about 110 bytes each: one record per file
    a.close()
    files = sorted(tmp_path.glob('audit.jsonl*'))
    assert [f.name for f in files] == ['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2', 'audit.jsonl.3']
    got = {f.name: [json.loads(l)['i'] for l in f.read_text().splitlines()] for f in files}
    assert got == {'audit.jsonl': [11], 'audit.jsonl.1': [10], 'audit.jsonl.2': [9], 'audit.jsonl.3': [8]}
    assert all(_mode(f) == 0o600 for f in files)

def test_the_audit_log_fills_a_file_up_to_its_limit(tmp_path):
    p = tmp_path/'audit.jsonl'
    a = AuditLog(p, secret=b's' * 32, max_bytes=10_000, backups=2)
    line = len(json.dumps({'time': dt.datetime.now(dt.timezone.utc).isoformat(timespec='milliseconds'), 'i': 0, 'pad': 'é' * 10}) + '\n')
    for i in range(30): a.write(i=i, pad='é' * 10)
    assert not (tmp_path/'audit.jsonl.1').exists() and len(p.read_text().splitlines()) == 30
    a.close()
    # a limit of exactly n lines: the next line rotates, not earlier
    q = tmp_path/'b.jsonl'; b = AuditLog(q, secret=b's' * 32, max_bytes=3 * line, backups=2)
    for i in range(3): b.write(i=i, pad='é' * 10)
    assert not (tmp_path/'b.jsonl.1').exists()
    b.write(i=3, pad='é' * 10); b.close()
    assert len((tmp_path/'b.jsonl.1').read_text().splitlines()) == 3 and len(q.read_text().splitlines()) == 1

def test_the_audit_log_counts_what_an_existing_file_holds(tmp_path):
    p = tmp_path/'audit.jsonl'; p.write_text('{"old": 1}\n' * 10)  # 110 bytes
    a = AuditLog(p, secret=b's' * 32, max_bytes=150, backups=1); a.write(i=1); a.close()
    assert (tmp_path/'audit.jsonl.1').read_text() == '{"old": 1}\n' * 10 and json.loads(p.read_text())['i'] == 1
