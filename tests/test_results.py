"The results table of README.md and the docs site: made from the newest full run of each task, never from a quick one."
import importlib.util, json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('results', ROOT/'tools'/'results.py'); results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results)

def _run(runs:Path, task:str, run_id:str, quick:bool, auc:float):
    d = runs/task/run_id; d.mkdir(parents=True)
    m = {'task': task, 'params': {'quick': quick, 'seed': 0}, 'chosen': 'rbf_svm',
         'test': {'roc_auc': {'value': auc, 'ci_low': auc - 0.02, 'ci_high': min(auc + 0.01, 1.0)}},
         'cv': {'roc_auc': {'value': auc + 0.001, 'ci_low': float('nan'), 'ci_high': float('nan')}},
         'anchors': [{'model': 'SVM', 'metric': 'roc_auc', 'value': 0.996, 'how': '10-fold CV'},
                     {'model': 'forest', 'metric': 'roc_auc', 'value': 0.991, 'how': '10-fold CV'},
                     {'model': 'SVM', 'metric': 'roc_auc', 'value': 0.99, 'how': '75/25 split'},
                     {'model': 'SVM', 'metric': 'accuracy', 'value': 0.976, 'how': '10-fold CV'}]}
    (d/'metrics.json').write_text(json.dumps(m))

def test_the_newest_full_run_is_shown_and_quick_runs_are_not(tmp_path):
    runs = tmp_path/'runs'
    _run(runs, 'breast-cancer-diagnosis', '20261201-100000-aaaa', False, 0.990)
    _run(runs, 'breast-cancer-diagnosis', '20261202-100000-bbbb', False, 0.995)   # the newest full run
    _run(runs, 'breast-cancer-diagnosis', '20261203-100000-cccc', True, 0.500)    # newer, but quick
    (runs/'pneumonia-xray'/'20261203-1').mkdir(parents=True); (runs/'pneumonia-xray'/'20261203-1'/'metrics.json').write_text('{trunc')
    found = results.latest_full_runs(runs)
    assert list(found) == ['breast-cancer-diagnosis'] and found['breast-cancer-diagnosis'][0].name == '20261202-100000-bbbb'
    table = results.results_table(found, lambda t: 'roc_auc')
    cells = [c.strip() for c in table.splitlines()[2].split('|')[1:-1]]
    assert cells == ['`breast-cancer-diagnosis`', 'AUC', '0.995 [0.975, 1.000]', '0.996', 'rbf_svm', 'SVM 0.996, forest 0.991 (10-fold CV); SVM 0.990 (75/25 split)',
                     '20261202-100000-bbbb']  # the CV figure without its NaN interval; anchors of the headline metric, grouped by how they were measured
    assert '0.500' not in table

def test_readme_markers_are_required_and_only_the_table_changes(tmp_path):
    text = f'# x\n\nbefore\n{results.BEGIN}\nold table\n{results.END}\nafter\n'
    out = results.replace_between_markers(text, '| new |')
    assert out == f'# x\n\nbefore\n{results.BEGIN}\n| new |\n{results.END}\nafter\n'
    with pytest.raises(ValueError, match='README.md: expected one'): results.replace_between_markers('# no markers', '| t |')
    with pytest.raises(ValueError, match='expected one'): results.replace_between_markers(f'{results.END}\n{results.BEGIN}', '| t |')

def test_the_readme_holds_the_markers_and_the_command_leaves_it_alone_without_full_runs(tmp_path):
    readme = (ROOT/'README.md').read_text()
    assert readme.count(results.BEGIN) == 1 and readme.count(results.END) == 1
    p = subprocess.run([sys.executable, str(ROOT/'tools'/'results.py'), '--runs', str(tmp_path), '--readme'], capture_output=True, text=True)
    assert p.returncode == 0 and 'no full runs' in p.stderr and (ROOT/'README.md').read_text() == readme

def test_tasks_without_a_run_here_keep_their_readme_row():
    old = (f"# x\n{results.BEGIN}\n| task | metric |\n|---|---|\n| `a-task` | old a |\n| `b-task` | old b |\n{results.END}\nafter\n")
    new = results.merged_table('| task | metric |\n|---|---|\n| `b-task` | new b |\n| `c-task` | new c |', old)
    assert new.splitlines() == ['| task | metric |', '|---|---|', '| `a-task` | old a |', '| `b-task` | new b |', '| `c-task` | new c |']
    assert results.table_rows('no markers') == {}

def test_a_newer_run_with_another_seed_does_not_replace_seed_0(tmp_path):
    runs = tmp_path/'runs'
    _run(runs, 'breast-cancer-diagnosis', '20261201-100000-aaaa', False, 0.990)
    _run(runs, 'breast-cancer-diagnosis', '20261202-100000-bbbb', False, 0.950)
    m = json.loads((runs/'breast-cancer-diagnosis'/'20261202-100000-bbbb'/'metrics.json').read_text()); m['params']['seed'] = 1
    (runs/'breast-cancer-diagnosis'/'20261202-100000-bbbb'/'metrics.json').write_text(json.dumps(m))
    assert results.latest_full_runs(runs)['breast-cancer-diagnosis'][0].name == '20261201-100000-aaaa'
    (runs/'breast-cancer-diagnosis'/'20261201-100000-aaaa'/'metrics.json').unlink()  # only the seed-1 run left: it is shown
    assert results.latest_full_runs(runs)['breast-cancer-diagnosis'][0].name == '20261202-100000-bbbb'
