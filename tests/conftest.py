"Shared fixtures: every test writes runs, registry, MLflow store and cache under a temporary folder."
import os, socket, sys, threading, functools
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('MEDMAAS_DATA_DIR') or ROOT.parent/'shared'/'data')
# the registry signs versions and the audit log keys its digests with secrets kept outside the registry (defaults under
# ~/.config/medmaas_nb/): tests use their own, created on first use, so they never write to the user's configuration
# (servers started by the tests inherit them)
import tempfile
_SECRETS = Path(tempfile.mkdtemp(prefix='medmaas-tests-'))
os.environ.setdefault('MEDMAAS_SIGNING_KEY_FILE', str(_SECRETS/'signing.key'))
os.environ.setdefault('MEDMAAS_AUDIT_KEY_FILE', str(_SECRETS/'audit.key'))

@pytest.fixture
def isolated(tmp_path, monkeypatch):
    "Point runs, registry, MLflow and the download cache at a temporary folder; returns it."
    monkeypatch.setenv('MEDMAAS_RUNS_DIR', str(tmp_path/'runs'))
    monkeypatch.setenv('MEDMAAS_REGISTRY_DIR', str(tmp_path/'registry'))
    monkeypatch.setenv('MEDMAAS_CACHE_DIR', str(tmp_path/'cache'))
    monkeypatch.setenv('MLFLOW_TRACKING_URI', f"sqlite:///{tmp_path/'mlruns'/'mlflow.db'}")
    return tmp_path

@pytest.fixture(scope='session')
def session_dirs(tmp_path_factory):
    "Session-wide isolated folders (for the quick pipeline runs shared by several tests)."
    d = tmp_path_factory.mktemp('medmaas')
    env = {'MEDMAAS_RUNS_DIR': str(d/'runs'), 'MEDMAAS_REGISTRY_DIR': str(d/'registry'),
           'MEDMAAS_CACHE_DIR': str(d/'cache'), 'MLFLOW_TRACKING_URI': f"sqlite:///{d/'mlruns'/'mlflow.db'}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield d
    for k, v in old.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

@pytest.fixture
def http_server(tmp_path):
    "A real HTTP server on 127.0.0.1 serving a temporary folder; yields (base_url, folder)."
    root = tmp_path/'www'; root.mkdir()
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/', root
    srv.shutdown(); srv.server_close()

IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')

def require(ok:bool, what:str):
    "Go on if `ok`; else skip saying `what` is missing, and under CI=true fail naming it (nothing skips silently in CI)."
    if ok: return
    if IN_CI: pytest.fail(f'{what} (required under CI=true)', pytrace=False)
    pytest.skip(what)

def require_module(name:str, why:str='a dev dependency'):
    "Import `name`, or skip (fail under CI=true) naming the missing module."
    import importlib
    try: return importlib.import_module(name)
    except ImportError as e: require(False, f'{name} is not installed ({why}; pip install -e .[dev]): {e}')

def require_data(dataset:str):
    "Skip (fail under CI=true) when a dataset's files are neither in MEDMAAS_DATA_DIR nor in the download cache."
    from medmaas_nb.data import availability
    require(availability(dataset) != 'missing', f'dataset {dataset!r} not found (set MEDMAAS_DATA_DIR or run: medmaas data fetch {dataset})')

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_ready(url:str, proc, timeout:float=180)->bool:
    "Poll `url` until it answers 200 (True), `proc` exits or `timeout` seconds pass (False)."
    import time, httpx
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200: return True
        except httpx.TransportError: pass
        time.sleep(0.2)
    return False
