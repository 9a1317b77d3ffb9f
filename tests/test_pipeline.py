"Quick runs of all four steps of every task whose data is available, through papermill, into an isolated runs folder."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from medmaas_nb.tasks import all_tasks, get_task
from medmaas_nb.pipeline import run_task, STEPS, StepFailed
from medmaas_nb.registry import Registry
from medmaas_nb.evaluate import compute_metrics
from medmaas_nb.client import ProcessHandle
from conftest import require_data

TASKS = list(all_tasks())  # every task: one whose data is missing skips naming the dataset (fails under CI=true)
_runs = {}

def quick_run(name):
    if name not in _runs: _runs[name] = run_task(name, quick=True, progress=lambda *_: None)
    return _runs[name]

def _gradcam_check_saved(d, m):
    "An imaging run keeps its Grad-CAM figure and the randomisation check printed under it."
    chk = json.loads((d/'seed_metrics.json').read_text())['gradcam_randomization']
    assert (d/'gradcam.png').stat().st_size > 1000
    assert chk['n_images'] == min(64, m['n_test']) and chk['draws'] == len(chk['spearman_per_draw']) == 3, chk
    assert all(-1 <= r <= 1 for r in chk['spearman_per_draw']) and len(set(chk['spearman_per_draw'])) == 3, chk

def _published_signature_saved(d, m):
    "The metastasis run sets the chosen model beside the published signature, on every test patient and per ER group."
    beside = json.loads((d/'protocols.json').read_text())['beside_published_signature']
    assert len(beside) == 2
    for rows in beside.values():
        assert rows['all']['n'] == m['n_test'] == rows['ER positive']['n'] + rows['ER negative']['n'], rows
        assert 0 <= rows['all']['value'] <= 1, rows
    assert beside['chosen model']['all']['value'] == pytest.approx(m['test']['c_index']['value'])  # the figure scored above

def _test_figure_recomputed(t, mv, d, m):
    "The run's test figure is what the registered model scores on the run's test split, computed here again."
    ds = t.load(quick=True, seed=0, **t.task_params(m['params']))
    assert ds.fingerprint() == json.loads((d/'data.json').read_text())['fingerprint']
    X, y = ds['test']
    got = compute_metrics(t.kind, y, t.scores(mv.load(), X))[t.primary_metric]
    assert got == pytest.approx(m['test'][t.primary_metric]['value'], abs=1e-6), (got, m['test'][t.primary_metric])

def _mlflow_loads_the_version(t, mv):
    """MLflow's own loader takes the registered version (`models:/<task>/<N>`) and gives the model's output (for classifiers,
    predict_proba), which for tasks scored the default way is what the service answers."""
    import mlflow, mlflow.pyfunc
    mlflow.set_tracking_uri(os.environ['MLFLOW_TRACKING_URI']); mlflow.set_registry_uri(os.environ['MLFLOW_TRACKING_URI'])
    X = t.input_spec.validate([t.input_spec.example()])
    model = mv.load()
    if t.runtime == 'sklearn' and not hasattr(model, 'predict'):  # a retriever: MLflow gives it no pyfunc flavour, only sklearn
        import mlflow.sklearn
        assert type(mlflow.sklearn.load_model(mv.uri)) is type(model); return
    got = np.asarray(mlflow.pyfunc.load_model(mv.uri).predict(X), dtype=float)
    if t.runtime == 'keras': want = np.asarray(model.predict(X, verbose=0), dtype=float)
    else: want = np.asarray(model.predict_proba(X) if t.kind in ('binary', 'multiclass') and hasattr(model, 'predict_proba') else model.predict(X), dtype=float)
    assert np.allclose(got.reshape(want.shape), want), (got, want)
    if t.score_fn is None and t.runtime == 'sklearn':
        s = np.asarray(t.scores(model, X), dtype=float)
        assert np.allclose(want[:, 1] if t.kind == 'binary' else want.reshape(s.shape), s)

HOOK_OUTPUTS = {'breast-ultrasound': _gradcam_check_saved, 'pneumonia-xray': _gradcam_check_saved,
                'metastasis-genes': _published_signature_saved}

def _intervals_respect_bounds(m:dict):
    "No interval of a bounded metric leaves the metric's range; none has zero width unless its folds agree; NaN only for one fold."
    from medmaas_nb.evaluate import METRIC_BOUNDS
    for split in ('cv', 'test'):
        for name, v in m[split].items():
            if name not in METRIC_BOUNDS or not isinstance(v, dict) or 'ci_low' not in v: continue
            lo, hi = METRIC_BOUNDS[name]
            if np.isnan(v['ci_low']) or np.isnan(v['ci_high']):
                assert v.get('n_folds') == 1 or np.isnan(v['value']), (split, name, v); continue
            assert lo <= v['ci_low'] <= v['ci_high'] <= hi, (split, name, v)
            assert v['ci_low'] < v['ci_high'] or v.get('sd', 1) == 0 or split == 'test', (split, name, v)

@pytest.mark.parametrize('name', TASKS)
def test_quick_run_leaves_reports_metrics_and_a_registered_model(session_dirs, name):
    require_data(get_task(name).dataset)
    res = quick_run(name)
    d = res.run_dir
    assert d.parent == session_dirs/'runs'/name
    for s in STEPS:
        assert (d/f'{s}.ipynb').exists() and (d/f'{s}.html').stat().st_size > 1000, s
    m = json.loads((d/'metrics.json').read_text())
    t = get_task(name)
    assert m['task'] == name and m['params']['quick'] is True and m['params']['seed'] == 0
    for split in ('cv', 'test'):
        v = m[split][t.primary_metric]
        one = v.get('n_folds') == 1  # one fold or seed (quick imaging runs): no spread, so no interval
        assert np.isfinite(v['value']) and (one and np.isnan(v['ci_low']) or v['ci_low'] <= v['value'] <= v['ci_high']), (split, v)
    _intervals_respect_bounds(m)
    mv = Registry().get(name, res.registered['version'])
    _test_figure_recomputed(t, mv, d, m)
    card = mv.card
    for k in ('task', 'dataset', 'model', 'input', 'params', 'metrics', 'anchors', 'report', 'code_version', 'intended_use'):
        assert card.get(k) not in (None, '', {}), k
    assert card['dataset']['checksum_sha256'] == m['dataset_sha256']
    assert 'production' not in Registry().aliases(name)  # quick runs are never promoted
    mv.verify()
    _mlflow_loads_the_version(t, mv)
    serve = json.loads((d/'serve.json').read_text())
    assert serve['predictions_equal'] is True and serve['version'] == mv.version
    # the runner started the service with the first step; the serve step adopted it and stopped it
    assert serve['prestarted'] is True
    pid = json.loads((d/'service'/'prestarted.json').read_text())['pid']
    assert ProcessHandle(pid).poll() is not None, 'the service outlived its run'
    if name in HOOK_OUTPUTS: HOOK_OUTPUTS[name](d, m)

def test_run_is_tracked_in_mlflow(session_dirs):
    res = quick_run('diabetes-progression')
    from mlflow.tracking import MlflowClient
    import mlflow
    mlflow.set_tracking_uri(os.environ['MLFLOW_TRACKING_URI']); mlflow.set_registry_uri(os.environ['MLFLOW_TRACKING_URI'])
    run = MlflowClient().get_run(res.registered['mlflow_run_id'])
    assert run.data.params['quick'] == 'True'
    assert 'test.r2.value' in run.data.metrics
    versions = MlflowClient().search_model_versions("name='diabetes-progression'")
    assert any(v.run_id == run.info.run_id for v in versions)
    arts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, 'reports')}
    assert 'reports/30_evaluate.html' in arts

def test_reports_reach_mlflow_de_identified(session_dirs, tmp_path):
    "What a report shows as text goes to MLflow through the de-identifier; the run folder keeps the original."
    from mlflow.tracking import MlflowClient
    import mlflow
    from medmaas_nb.registry import Registry, log_reports
    from medmaas_nb.deid import deidentify_notebook, deidentify_html
    res = quick_run('diabetes-progression')
    nb = json.loads((res.run_dir/'40_serve.ipynb').read_text())
    nb['cells'].append({'cell_type': 'markdown', 'metadata': {}, 'source': 'Asked for Mrs. Quennell, 617-555-0143.'})
    crafted = tmp_path/'40_serve.ipynb'; crafted.write_text(json.dumps(nb))
    page = tmp_path/'notes.html'; page.write_text('<html><body><p>Seen by Dr. Quennell on 03/04/2019.</p></body></html>')
    run_id = log_reports(Registry().get('diabetes-progression', res.registered['version']), [crafted, page])
    mlflow.set_tracking_uri(os.environ['MLFLOW_TRACKING_URI'])
    got = Path(MlflowClient().download_artifacts(run_id, 'reports', str(tmp_path/'got')))
    assert 'Quennell' not in (got/'40_serve.ipynb').read_text() and '555-0143' not in (got/'40_serve.ipynb').read_text()
    assert json.loads((got/'40_serve.ipynb').read_text()) == deidentify_notebook(nb)
    assert (got/'notes.html').read_text() == '<html><body><p>Seen by Dr. [NAME] on [DATE].</p></body></html>'
    assert 'Quennell' in crafted.read_text()  # the original is left as it was

def test_parameters_are_injected_into_the_notebooks(session_dirs):
    "papermill must really replace the defaults: a different seed gives a different split."
    a = quick_run('diabetes-progression')
    b = run_task('diabetes-progression', quick=True, params={'seed': '1'}, steps=('10_data',), progress=lambda *_: None, track=False)
    fa = json.loads((a.run_dir/'data.json').read_text())['fingerprint']
    fb = json.loads((b.run_dir/'data.json').read_text())['fingerprint']
    assert fa != fb
    nb = json.loads((b.run_dir/'10_data.ipynb').read_text())
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in nb['cells'])

def test_failing_step_names_the_step_and_cell_and_registers_nothing(isolated):
    # parameters are checked before any notebook runs, so the failure must come from the data itself: a file that is not a
    # MedMNIST archive, passed through the imaging tasks' `npz_path` parameter
    bad = isolated/'not-medmnist.npz'; bad.write_text('not an npz archive')
    before = Registry().versions('breast-ultrasound')
    r = subprocess.run([str(Path(sys.executable).parent/'medmaas'), 'run', 'breast-ultrasound', '--quick', '-p', 'npz_path', str(bad)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert 'step 10_data failed in cell' in r.stderr and 'not-medmnist.npz' in r.stderr and 'Traceback' not in r.stderr
    run_dir = next((isolated/'runs'/'breast-ultrasound').iterdir())
    assert (run_dir/'10_data.ipynb').exists() and not (run_dir/'20_train.ipynb').exists()
    assert Registry().versions('breast-ultrasound') == before == []
    # the service started with the run (waiting for a registration that never came) is stopped with it
    pid = json.loads((run_dir/'service'/'prestarted.json').read_text())['pid']
    assert ProcessHandle(pid).poll() is not None, 'a failed run left its service running'

def test_step_kernels_listen_on_private_unix_sockets(tmp_path):
    "A step's kernel talks over IPC sockets in a folder only its user can open (no loopback TCP port), removed when it stops."
    from medmaas_nb.pipeline import WarmKernel, pipelines_dir
    k = WarmKernel(pipelines_dir()/'10_data.ipynb', 'diabetes-progression', tmp_path)
    info, folder = k.ready().get_connection_info(), Path(k._ipc)
    assert info['transport'] == 'ipc' and Path(info['ip']).parent == folder and folder.stat().st_mode & 0o077 == 0
    k.shutdown()
    assert not folder.exists()
