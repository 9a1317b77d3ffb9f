"""`medmaas sweep`: a grid over a task's parameters run by Ray Tune on a local Ray, each trial a real run, the choice on
cross-validation only, a report, and the chosen trial registered."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent/'medmaas'

@pytest.fixture
def env(tmp_path):
    return {**os.environ, 'MEDMAAS_RUNS_DIR': str(tmp_path/'runs'), 'MEDMAAS_REGISTRY_DIR': str(tmp_path/'registry'),
            'MEDMAAS_CACHE_DIR': str(tmp_path/'cache'), 'MLFLOW_TRACKING_URI': ''}

def test_a_sweep_runs_every_trial_chooses_on_cv_reports_and_registers_the_choice(env):
    r = subprocess.run([str(BIN), 'sweep', 'diabetes-progression', '-p', 'test_size', '0.2,0.3', '--quick'],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr and 'Configuration for experiment' not in r.stdout, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [l[:13] for l in lines if l.startswith('[')] == ['[1/2 trials] ', '[2/2 trials] '], r.stdout
    (sweep_dir,) = [d for d in (Path(env['MEDMAAS_RUNS_DIR'])/'diabetes-progression').iterdir() if (d/'sweep.json').exists()]
    S = json.loads((sweep_dir/'sweep.json').read_text())
    assert [t['params'] for t in S['trials']] == [{'test_size': 0.2}, {'test_size': 0.3}]
    for t in S['trials']:  # each trial is a real run whose own metrics give the figure the sweep compared
        m = json.loads((Path(t['run_dir'])/'metrics.json').read_text())
        assert t['status'] == 'ok' and t['cv'] == m['cv']['r2']['value'] and 'test' not in t
        assert {'10_data.html', '20_train.html', '30_evaluate.html'} <= {p.name for p in Path(t['run_dir']).iterdir()}
        assert json.loads((Path(t['run_dir'])/'params.json').read_text())['test_size'] == t['params']['test_size']
    best = max(S['trials'], key=lambda t: t['cv'])
    assert S['best']['trial'] == best['trial'] and S['trials'][0]['cv'] != S['trials'][1]['cv']
    assert (Path(best['run_dir'])/'registration.json').exists()
    assert not any((Path(t['run_dir'])/'registration.json').exists() for t in S['trials'] if t is not best)
    from medmaas_nb.registry import Registry
    reg = Registry(Path(env['MEDMAAS_REGISTRY_DIR']))
    assert reg.versions('diabetes-progression') == [S['registration']['version']]
    assert reg.get('diabetes-progression', S['registration']['version']).card['params']['test_size'] == best['params']['test_size']
    assert 'production' not in reg.aliases('diabetes-progression')  # a quick sweep never takes it
    html = (sweep_dir/'sweep.html').read_text()
    assert 'The chosen trial' in html and f"Trial {best['trial']}: test_size = {best['params']['test_size']}" in html
    assert r.stdout.strip().endswith(str(sweep_dir/'sweep.html'))

@pytest.mark.parametrize('args,message', [
    (['-p', 'n_estimator', '1,2'], "Unknown parameter(s) ['n_estimator']"),
    (['-p', 'test_size', '0.2,2'], "'test_size' must be in"),
    (['-p', 'test_size', ','], '-p test_size: give the values to try'),
    ([], 'at least one -p'),
    (['-p', 'test_size', '0.2,0.3', '--random', '0'], '--random 0'),
])
def test_a_bad_grid_fails_before_any_run(env, args, message):
    r = subprocess.run([str(BIN), 'sweep', 'diabetes-progression', *args], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and message in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not Path(env['MEDMAAS_RUNS_DIR']).exists()
