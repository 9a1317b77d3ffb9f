"Without a browser the browser tests say why: a skip with the reason locally, a failure under CI=true (never a silent skip)."
import os, subprocess, sys
import pytest
from conftest import ROOT

def _run(ci:str)->subprocess.CompletedProcess:
    env = {**os.environ, 'MEDMAAS_CHROMIUM': '/nonexistent/chromium', 'CI': ci}
    return subprocess.run([sys.executable, '-m', 'pytest', str(ROOT/'tests'/'test_browser.py'), '-k', 'jupyterlab', '-q', '-rs', '-p', 'no:cacheprovider'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

@pytest.mark.parametrize('ci, outcome', [('', '1 skipped'), ('true', '1 error')])
def test_missing_browser(ci, outcome):
    r = _run(ci)
    assert outcome in r.stdout, r.stdout[-2000:]
    assert 'Chromium not found at /nonexistent/chromium' in r.stdout
