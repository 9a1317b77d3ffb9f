"""Build the documentation site offline: execute the notebooks, process them with nbdev (hidden cells out, API docs in),
add the latest report of each task and a Results page (`tools/results.py`), and render everything with MkDocs (material theme, offline search) into `site/`.
Nothing in the built pages loads from the internet. `--quick` runs only the exported code and the API docs; `--no-exec` runs nothing.
Executed notebooks are cached in `_docs_build/cache/`, keyed by the notebook, the package's code and the data manifest: a rebuild
runs only the notebooks whose inputs changed (`--no-cache` runs them all)."""
import argparse, hashlib, json, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROC = ROOT/'_proc'                 # nbdev-processed notebooks = the MkDocs docs_dir
CFG = ROOT/'_docs_build'/'mkdocs.yml' # generated MkDocs configuration
CACHE = ROOT/'_docs_build'/'cache'   # executed notebooks of earlier builds
WIDGET_NOTE = ('<div class="admonition note"><p>Interactive widget: open this notebook in JupyterLab '
               '(<code>make lab</code>) to use it.</p></div>')

def _execute(args):
    "Process one notebook with nbdev's docs processors, executing its cells on the way; returns (name, seconds, errors)."
    src, dst, env, full = args
    os.environ.update(env); os.chdir(src.parent); sys.path.insert(0, str(ROOT))  # cells see the folder nbdev_test runs them in
    from execnb.nbio import read_nb, write_nb
    from nbdev.processors import FilterDefaults, exec_show_docs, _show_docs

    class exec_cells(exec_show_docs):
        "Run every code cell in order (full build) or only exports and show_doc cells (quick build); keep going after an error."
        errors = []
        def begin(self):
            super().begin()  # show_doc of a subclass evaluates its inherited annotations in the notebook's namespace
            if hasattr(self, 'k'): self.k.run_cell('from typing import Any, Callable')
        def __call__(self, cell):
            if full is None or not hasattr(self, 'k') or cell.cell_type != 'code' or not cell.source.strip(): return
            if cell.directives_.get('eval:', [''])[0].lower() == 'false': return
            if 'notest' in cell.directives_: return  # slow or optional-extra cells: not run by `make test` either
            if not full and not (cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or _show_docs(cell.parsed_() or [])): return
            self.k.cell(cell)
            if self.k.exc: self.errors.append(f'cell {cell.idx_}: {self.k.exc!r}'[:300]); self.k.exc = None
        def end(self): pass  # no widget state: it would need the widget manager from a CDN

    def widget_note(cell):
        "Widgets need a live kernel: say so instead of showing their text form."
        if cell.cell_type != 'code': return
        for o in cell.get('outputs', []):
            if 'application/vnd.jupyter.widget-view+json' in o.get('data', {}):
                o['data'] = {'text/html': WIDGET_NOTE}

    class DocsFilter(FilterDefaults):
        def base_procs(self): return [exec_cells if p is exec_show_docs else p for p in super().base_procs()] + [widget_note, unquarto]

    t0 = time.perf_counter(); nb = read_nb(src)
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()): DocsFilter()(nb)  # widgets' text form would be printed here
    dst.parent.mkdir(parents=True, exist_ok=True); write_nb(nb, dst)
    return src.relative_to(ROOT/'nbs').as_posix(), time.perf_counter() - t0, exec_cells.errors

_ATTRS = re.compile(r'\]\(([^)]*)\)\{[^}]*\}')
_DIRECTIVE = re.compile(r'^#\|.*$\n?', re.M)

def unquarto(cell):
    "What Quarto would do with nbdev's output, for a plain notebook renderer: front matter -> title, `echo: false` -> output only."
    if cell.cell_type == 'raw' and cell.source.lstrip().startswith('---'):
        import yaml
        fm = yaml.safe_load(cell.source.strip().strip('-')) or {}
        cell.cell_type = 'markdown'; cell.pop('outputs', None); cell.pop('execution_count', None)
        cell.source = f"# {fm.get('title', '')}\n\n" + (f"> {fm['description']}" if fm.get('description') else '')
        return
    if cell.cell_type != 'code': return
    if re.search(r'^#\|\s*echo:\s*false', cell.source, re.M):
        md = [o['data']['text/markdown'] for o in cell.get('outputs', []) if 'text/markdown' in o.get('data', {})]
        if md:  # show_doc: its markdown becomes the cell
            md = ''.join(''.join(m) if isinstance(m, list) else m for m in md)
            cell.cell_type = 'markdown'; cell.pop('outputs', None); cell.pop('execution_count', None)
            cell.source = _ATTRS.sub(r'](\1)', md); return
        cell.setdefault('metadata', {}).setdefault('tags', []).append('hide-input')
    cell.source = _DIRECTIVE.sub('', cell.source)

def notebooks():
    "The notebooks of the site: library notebooks, tutorials and the home page (pipeline step notebooks are reports' sources)."
    nbs = ROOT/'nbs'
    return sorted(p for p in nbs.rglob('*.ipynb') if 'pipelines' not in p.parts and '.ipynb_checkpoints' not in p.parts
                  and not p.name.startswith(('_', '.')))

def latest_reports(runs_dir:Path)->dict:
    "{task: executed 30_evaluate.ipynb of its newest run}."
    out = {}
    for t in sorted(p for p in runs_dir.glob('*') if p.is_dir()):
        done = sorted(r for r in t.iterdir() if (r/'30_evaluate.ipynb').exists() and (r/'metrics.json').exists())
        if done: out[t.name] = done[-1]/'30_evaluate.ipynb'
    return out

def _title(nb:Path)->str:
    for c in json.loads(nb.read_text())['cells']:
        if c['cell_type'] == 'markdown':
            m = re.search(r'^#\s+(.+)$', ''.join(c['source']), re.M)
            if m: return m.group(1).strip()
    return nb.stem

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--quick', action='store_true', help='run only the exported code and the API docs cells, not the examples')
    ap.add_argument('--no-exec', action='store_true', help='run nothing: pages show the code without outputs (for tests)')
    ap.add_argument('--site-dir', default=str(ROOT/'site'))
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--no-cache', action='store_true', help='execute every notebook, ignoring (and refreshing) the cache')
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    shutil.rmtree(PROC, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix='medmaas-docs-'))
    env = {'MEDMAAS_RUNS_DIR': str(scratch/'runs'), 'MEDMAAS_REGISTRY_DIR': str(scratch/'registry'),
           'MLFLOW_TRACKING_URI': f"sqlite:///{scratch/'mlflow.db'}", 'MPLBACKEND': 'Agg'}
    runs_dir = Path(os.environ.get('MEDMAAS_RUNS_DIR') or ROOT/'runs')
    mode = 'none' if a.no_exec else 'quick' if a.quick else 'full'
    jobs, code = [], _inputs_digest()
    for p in notebooks():
        dst = PROC/p.relative_to(ROOT/'nbs'); hit = _cached(p, mode, code)
        if hit is not None and not a.no_cache:
            dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(hit, dst); print(f'  {dst.relative_to(PROC).as_posix()}: cached')
        else: jobs.append((p, dst, env, None if a.no_exec else not a.quick))
    import multiprocessing as mp
    import nbdev.processors, execnb.shell  # noqa: F401  (imported once, shared by the forked workers)
    with mp.get_context('fork').Pool(a.workers, maxtasksperchild=1) as pool:  # one fresh process per notebook
        for (src, dst, *_), (name, secs, errs) in zip(jobs, pool.imap(_execute, jobs)):
            print(f'  {name}: {secs:.1f}s' + ''.join(f'\n    error in {e}' for e in errs))
            if not errs and mode != 'none': _store(src, dst, mode, code)  # a notebook with errors runs again next time
    shutil.rmtree(scratch, ignore_errors=True)
    # the latest report of each task
    reports = latest_reports(runs_dir)
    for task, nb in reports.items():
        d = PROC/'reports'; d.mkdir(parents=True, exist_ok=True); shutil.copy2(nb, d/f'{task}.ipynb')
    sys.path.insert(0, str(ROOT/'tools')); import results  # the Results page: the latest full runs' headline figures
    results.write_page(PROC/'results.md', runs_dir)
    for page in sorted((ROOT/'docs').glob('*.md')): shutil.copy2(page, PROC/page.name)  # guides written as pages (scaling)
    for page in sorted((ROOT/'nbs'/'tutorials').glob('*.md')):  # the tutorials' glossary
        (PROC/'tutorials').mkdir(parents=True, exist_ok=True); shutil.copy2(page, PROC/'tutorials'/page.name)
    write_mkdocs_yml(reports)
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '--clean', '-f', str(CFG), '--site-dir', a.site_dir],
                   check=True, cwd=ROOT, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'})
    strip_external(Path(a.site_dir))
    print(f'site built in {time.perf_counter() - t0:.1f}s: {a.site_dir}/index.html')

def _inputs_digest()->str:
    "What every notebook's outputs depend on besides its own cells: the package's code and the data manifest."
    h = hashlib.sha256()
    for p in sorted((ROOT/'medmaas_nb').rglob('*.py')) + [ROOT/'data'/'manifest.json', ROOT/'settings.ini']:
        if p.exists(): h.update(p.relative_to(ROOT).as_posix().encode() + b'\0' + p.read_bytes())
    return h.hexdigest()

def _cache_path(src:Path, mode:str, code:str)->Path:
    name = src.relative_to(ROOT/'nbs').as_posix().replace('/', '__')
    key = hashlib.sha256(src.read_bytes() + mode.encode() + code.encode()).hexdigest()[:20]
    return CACHE/f'{name}.{key}.ipynb'

def _cached(src:Path, mode:str, code:str)->Path|None:
    p = _cache_path(src, mode, code)
    return p if p.exists() else None

def _store(src:Path, dst:Path, mode:str, code:str):
    p = _cache_path(src, mode, code); CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(p.name.rsplit('.', 2)[0] + '.*.ipynb'): old.unlink()  # one entry per notebook
    shutil.copy2(dst, p)

def write_mkdocs_yml(reports:dict):
    rel = lambda p: p.relative_to(PROC).as_posix()
    lib = sorted(p for p in PROC.glob('[0-9]*.ipynb'))
    tuts = sorted((PROC/'tutorials').glob('*.ipynb'))
    title_of = lambda p: _title(ROOT/'nbs'/p.relative_to(PROC))
    nav = [{'Home': 'index.ipynb'}, {'Results': 'results.md'}, {'Scaling out': 'scaling.md'},
           {'Tutorials': [{title_of(p).replace('Tutorial: ', ''): rel(p)} for p in tuts]
                         + ([{'Glossary': 'tutorials/glossary.md'}] if (PROC/'tutorials'/'glossary.md').exists() else [])},
           {'API reference': [{title_of(p): rel(p)} for p in lib]}]
    if reports: nav.append({'Reports (latest run)': [{t: f'reports/{t}.ipynb'} for t in reports]})
    cfg = {'site_name': 'medmaas_nb', 'site_description': 'A Jupyter-first research and teaching workbench for medical Model-as-a-Service',
           'docs_dir': str(PROC), 'use_directory_urls': False, 'nav': nav,
           'theme': {'name': 'material', 'font': False, 'features': ['navigation.sections', 'search.highlight'],
                     'palette': {'primary': 'teal'}},
           'plugins': ['search', 'offline', {'mkdocs-jupyter': {'include_source': False, 'ignore_h1_titles': True,
                                                                'include_requirejs': False, 'execute': False, 'show_input': True,
                                                                'remove_tag_config': {'remove_input_tags': ['hide-input']}}}],
           'exclude_docs': '*.yml\n*.py\nsidebar.yml\n_quarto.yml\n',
           'markdown_extensions': ['admonition', 'tables']}
    import yaml
    CFG.parent.mkdir(exist_ok=True); CFG.write_text(yaml.safe_dump(cfg, sort_keys=False))

_MD_LINK = re.compile(r'href="(?!https?:|/|#)([^"#]+)\.md(#[^"]*)?"')  # notebooks link pages as `glossary.md#term`
_EXT = re.compile(r'<(script|link)\b[^>]*\b(?:src|href)=["\']https?://[^"\']*["\'][^>]*>(?:\s*</script>)?', re.I)
_MERMAID = re.compile(r'<script type="module">(?:(?!</script>).)*?https?://(?:(?!</script>).)*?</script>', re.S)

def _doc_links(site:Path)->tuple[re.Pattern, dict]:
    "nbdev links symbols to the published site (doc_host/doc_baseurl); point them at this site's pages instead."
    from nbdev.config import get_config
    cfg = get_config(); base = (cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')).rstrip('/') + '/'
    pages = {}
    for p in (ROOT/'nbs').glob('*.ipynb'):
        m = re.search(r'#\|\s*default_exp\s+(\S+)', p.read_text())
        if m: pages[m.group(1) + '.html'] = p.stem + '.html'
    return re.compile(re.escape(base) + r'([\w./-]+\.html)'), pages

def strip_external(site:Path):
    "Remove <script src=http(s)://...>, <link href=http(s)://...> and CDN module loaders a template may add; make doc links local."
    n = 0; links, pages = _doc_links(site)
    for p in site.rglob('*.html'):
        s = p.read_text(encoding='utf-8'); up = '../' * (len(p.relative_to(site).parts) - 1)
        s2, k = _EXT.subn('', s); s2, k2 = _MERMAID.subn('', s2)
        s2 = links.sub(lambda m: up + pages.get(m.group(1), m.group(1)), s2)
        s2 = _MD_LINK.sub(lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"', s2)  # mkdocs rewrites them in pages only
        if s2 != s: p.write_text(s2, encoding='utf-8'); n += k + k2
    if n: print(f'  removed {n} external script/style tag(s)')

if __name__ == '__main__': main()
