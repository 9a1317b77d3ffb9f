"""Real-browser checks (Playwright driving Debian's Chromium): the docs site served on loopback, and the clinical tutorial
run in JupyterLab. Screenshots go to runs/screenshots/. Without Chromium (or Playwright) the tests are skipped with the
reason; under CI=true a missing browser is a failure."""
import functools, json, os, shutil, subprocess, sys, threading, time, urllib.request
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlparse
import pytest
from conftest import ROOT, free_port

CHROMIUM = os.environ.get('MEDMAAS_CHROMIUM', '/usr/bin/chromium')
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run']
SHOTS = ROOT/'runs'/'screenshots'
BIN = Path(sys.executable).parent
LOCAL = ('127.0.0.1', 'localhost')

def _missing()->str|None:
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return 'the playwright package is not installed (pip install playwright; do not run `playwright install`)'
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        return f'Chromium not found at {CHROMIUM} (apt-get install -y chromium)'
    return None

@pytest.fixture(scope='module')
def browser():
    why = _missing()
    if why:
        if os.environ.get('CI', '').lower() == 'true': pytest.fail(f'browser tests cannot run under CI: {why}')
        pytest.skip(f'browser tests skipped: {why}')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()

def _watch(page):
    "Record console errors, page errors and every request that would leave the machine (those are aborted)."
    seen = {'console': [], 'external': [], 'failed': []}
    page.on('console', lambda m: seen['console'].append(f'{m.type}: {m.text}') if m.type == 'error' else None)
    page.on('pageerror', lambda e: seen['console'].append(f'pageerror: {e}'))
    page.on('requestfailed', lambda r: seen['failed'].append(f'{r.url} ({r.failure})')
            if urlparse(r.url).hostname in LOCAL and 'ERR_ABORTED' not in (r.failure or '') else None)  # aborted = navigated away
    def route(r):
        u = urlparse(r.request.url)
        if u.scheme in ('http', 'https', 'ws', 'wss') and u.hostname not in LOCAL:
            seen['external'].append(r.request.url); return r.abort()
        return r.continue_()
    page.route('**/*', route)
    return seen

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

@pytest.fixture(scope='module')
def docs_site(tmp_path_factory):
    "A quick build of the docs site (notebooks not executed; or the site in MEDMAAS_DOCS_SITE), served on 127.0.0.1."
    if os.environ.get('MEDMAAS_DOCS_SITE'): site = Path(os.environ['MEDMAAS_DOCS_SITE'])  # check a site built by `make docs`
    else: site = tmp_path_factory.mktemp('docs')/'site'
    r = subprocess.run(['true'] if os.environ.get('MEDMAAS_DOCS_SITE') else [sys.executable, str(ROOT/'tools'/'build_docs.py'), '--no-exec', '--site-dir', str(site)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/', site
    srv.shutdown(); srv.server_close()

def test_docs_site_pages_load_offline_without_errors(browser, docs_site):
    base, site = docs_site
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html') if p.name != '404.html')
    tutorials = sorted((ROOT/'nbs'/'tutorials').glob('[0-9]*.ipynb'))
    assert len(tutorials) >= 4, tutorials  # one per family: clinical, imaging, genomics, text
    for must in ['index.html', 'results.html', 'scaling.html', '09_widgets.html', '03_tasks.html'] + [f'tutorials/{p.stem}.html' for p in tutorials]: assert must in pages, pages
    SHOTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={'width': 1280, 'height': 900}); page = ctx.new_page(); seen = _watch(page)
    page.set_default_navigation_timeout(120_000)  # executed pages carry ~1 MB of figures: slow to lay out on a busy 2-core machine
    problems = {}
    for rel in pages:
        before = {k: len(v) for k, v in seen.items()}
        resp = page.goto(base + rel, wait_until='networkidle')
        new = {k: v[before[k]:] for k, v in seen.items() if len(v) > before[k]}
        if resp.status != 200 or new: problems[rel] = {'status': resp.status, **new}
        if rel in ('index.html', '09_widgets.html') or rel.startswith('tutorials/'):
            page.screenshot(path=str(SHOTS/f"docs_{rel.replace('/', '_').replace('.html', '')}.png"), full_page=False)
            figs = page.locator('.jupyter-wrapper img[src^="data:image/png"]')  # executed builds: the page's largest figure too
            if rel.startswith('tutorials/') and figs.count():
                areas = [(b['width'] * b['height'] if b else 0) for b in (figs.nth(k).bounding_box() for k in range(figs.count()))]
                figs.nth(areas.index(max(areas))).screenshot(path=str(SHOTS/f"docs_{rel.replace('/', '_').replace('.html', '')}_figure.png"))
    assert not problems, json.dumps(problems, indent=1)[:4000]
    # navigation: the home page links to the tutorials and the API reference
    page.goto(base + 'index.html')
    nav = page.locator('nav.md-nav--primary').inner_text()
    for item in ('Results', 'Scaling out', 'Tutorials', 'API reference', 'Widgets'): assert item in nav, nav
    for p in tutorials:  # every tutorial is in the navigation, under its title
        title = json.loads(p.read_text())['cells'][0]['source']
        title = (''.join(title) if isinstance(title, list) else title).splitlines()[0].lstrip('# ').replace('Tutorial: ', '')
        assert title in nav, (title, nav)
    # search (offline index, web worker): finds the playground
    page.locator('input.md-search__input').click(); page.keyboard.type('playground')
    page.wait_for_selector('.md-search-result__item', timeout=15000)
    assert page.locator('.md-search-result__item').count() > 0
    page.screenshot(path=str(SHOTS/'docs_search.png'))
    assert not seen['external'], seen['external']
    ctx.close()

def test_glossary_links_of_the_tutorials_land_on_their_terms(browser, docs_site):
    "Every tutorial links its terms as glossary.md#term; on the site each link must open the glossary at that term."
    import re
    base, site = docs_site
    assert (site/'tutorials'/'glossary.html').exists()
    ctx = browser.new_context(); page = ctx.new_page(); seen = _watch(page)
    page.goto(base + 'tutorials/glossary.html', wait_until='networkidle')
    ids = set(page.eval_on_selector_all('[id]', 'els => els.map(e => e.id)'))
    assert {'censoring', 'auc', 'calibration', 'leakage'} <= ids, sorted(ids)[:20]
    assert 'Glossary' in page.locator('nav.md-nav--primary').inner_text()
    linked = {}
    for nb in sorted((ROOT/'nbs'/'tutorials').glob('[0-9]*.ipynb')):
        page.goto(base + f'tutorials/{nb.stem}.html', wait_until='networkidle')
        hrefs = page.eval_on_selector_all('a[href*="glossary"]', 'els => els.map(e => e.getAttribute("href"))')
        assert all(h.startswith('glossary.html') for h in hrefs), hrefs  # the .md link was made a page link
        linked[nb.stem] = {h.split('#', 1)[1] for h in hrefs if '#' in h}
        assert linked[nb.stem] <= ids, (nb.stem, linked[nb.stem] - ids)  # no link to a term the glossary lacks
    assert all(len(v) >= 3 for k, v in linked.items() if k != '00_start_here'), linked  # the tutorials do link their terms
    page.goto(base + 'tutorials/01_clinical.html', wait_until='networkidle')
    page.locator(f'a[href="glossary.html#{sorted(linked["01_clinical"])[0]}"]').first.click()
    page.wait_for_url('**/glossary.html#*'); assert page.url.split('#')[1] in ids
    assert not seen['external'] and not seen['console'], seen
    ctx.close()

def _start_lab(root:Path, env:dict)->tuple[subprocess.Popen, str, str]:
    port, token = free_port(), os.urandom(12).hex()
    log = open(root/'lab.log', 'w')
    proc = subprocess.Popen([str(BIN/'jupyter'), 'lab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
                             f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}', '--ServerApp.port_retries=0',
                             '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
                             '--LabApp.extension_manager=readonly'] + (['--allow-root'] if os.geteuid() == 0 else []),
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f'http://127.0.0.1:{port}'
    for _ in range(120):
        try:
            with urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2) as r:
                if r.status == 200: return proc, url, token
        except OSError: time.sleep(0.5)
        if proc.poll() is not None: break
    proc.terminate(); raise RuntimeError('JupyterLab did not start:\n' + (root/'lab.log').read_text()[-3000:])

def _value(page, i=0)->str:
    return page.locator('.medmaas-playground').nth(i).locator('.medmaas-prediction .medmaas-value').inner_text()

def test_jupyterlab_runs_the_tutorial_and_the_playground_reacts(browser, tmp_path):
    root = tmp_path/'lab'; (root/'tutorials').mkdir(parents=True)
    from medmaas_nb.teaching import write_student_notebooks  # the learner's copy, as `make lab` opens it
    write_student_notebooks([ROOT/'nbs'/'tutorials'/'01_clinical.ipynb'], root/'tutorials')  # a copy: Lab may autosave outputs
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'MEDMAAS_RUNS_DIR': str(tmp_path/'runs'), 'MEDMAAS_REGISTRY_DIR': str(tmp_path/'registry'),
           'MLFLOW_TRACKING_URI': f"sqlite:///{tmp_path/'mlflow.db'}", 'JUPYTER_CONFIG_DIR': str(tmp_path/'jcfg'),
           'JUPYTERLAB_SETTINGS_DIR': str(tmp_path/'jset'), 'JUPYTER_RUNTIME_DIR': str(tmp_path/'jrun'), 'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path/'jws')}
    proc, url, token = _start_lab(root, env)
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        ctx = browser.new_context(viewport={'width': 1400, 'height': 1000}); page = ctx.new_page(); seen = _watch(page)
        try: _drive_lab(page, url, token, seen)
        except Exception:
            page.screenshot(path=str(SHOTS/'lab_failure.png')); raise
        ctx.close()
    finally:
        proc.terminate()
        try: proc.wait(15)
        except subprocess.TimeoutExpired: proc.kill()

def _drive_lab(page, url, token, seen):
        page.goto(f'{url}/lab/tree/tutorials/01_clinical.ipynb?token={token}')
        page.wait_for_selector('.jp-Notebook', timeout=60000)
        try:  # Lab may ask which kernel to start: the environment's Python 3
            page.locator('.jp-Dialog button.jp-mod-accept', has_text='Select').click(timeout=8000)
        except Exception: pass
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state='attached', timeout=60000)  # kernel ready
        page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
        page.locator('.lm-Menu-itemLabel', has_text='Run All Cells').first.click()
        # the playground renders once its cell has run
        pg = page.locator('.medmaas-playground').first
        pg.wait_for(state='visible', timeout=90000)
        pg.scroll_into_view_if_needed()
        # wait for the whole notebook to finish (the last cells move the slider and put it back)
        page.wait_for_function("() => [...document.querySelectorAll('.jp-InputArea-prompt')].every(e => !e.textContent.includes('*'))", timeout=120000)
        before = _value(page)
        readout = pg.locator('.medmaas-input-bmi .widget-readout')
        bmi_before = readout.inner_text()
        pg.screenshot(path=str(SHOTS/'lab_playground_before.png'))
        readout.click(); page.keyboard.press('Control+A'); page.keyboard.type('20'); page.keyboard.press('Enter')
        page.wait_for_function("([sel, old]) => { const e = document.querySelectorAll(sel)[0]; return e && e.textContent !== old; }",
                               arg=['.medmaas-playground .medmaas-prediction .medmaas-value', before], timeout=30000)
        after = _value(page)
        assert readout.inner_text().startswith('20'), readout.inner_text()
        assert after != before and float(after) != float(before), (before, after)
        pg.screenshot(path=str(SHOTS/'lab_playground_after.png'))
        page.screenshot(path=str(SHOTS/'lab_tutorial.png'))
        # the explanation is shown too, and no cell failed
        assert 'bmi' in pg.locator('table.medmaas-explanation').inner_text()
        assert page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]', has_text='Error').count() == 0
        # the learner's copy has no solutions: each exercise's checker says it is not answered yet, and nothing fails
        assert page.locator('.jp-OutputArea-output', has_text='not answered yet').count() >= 2
        assert page.locator('.jp-OutputArea-output', has_text='# Solution').count() == 0
        assert not seen['external'], seen['external']
        print(f'BMI {bmi_before} -> 20: predicted progression {before} -> {after}')
