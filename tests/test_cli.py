"The `medmaas` command line: listings, and clear errors before any notebook runs."
import os, subprocess, sys
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent/'medmaas'

def medmaas(*args, env=None):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})

def test_tasks_lists_family_kind_dataset():
    r = medmaas('tasks')
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith('diabetes-progression'))
    assert 'clinical' in line and 'regression' in line and 'diabetes' in line

def test_data_list_shows_license_and_availability():
    r = medmaas('data', 'list')
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith('diabetes '))
    assert 'package' in line and 'BSD' in line

@pytest.mark.parametrize('args,message', [
    (['run', 'no-such-task'], "Unknown task 'no-such-task'"),
    (['run', 'diabetes-progression', '-p', 'n_estimator', '5'], "Unknown parameter(s) ['n_estimator']"),
    (['run', 'diabetes-progression', '-p', 'n_estimators', 'many'], "'n_estimators' expects int"),
    (['run', 'diabetes-progression', '-p', 'seed', '1.5'], "'seed' expects int"),
    (['run', 'diabetes-progression', '-p', 'test_size', '1.5'], "'test_size' must be in [0.05, 0.9]"),
    (['run', 'diabetes-progression', '-p', 'n_estimators', '0'], "'n_estimators' must be in [1,"),
    (['data', 'fetch', 'no-such-data'], "Unknown dataset 'no-such-data'"),
])
def test_bad_input_fails_before_running(isolated, args, message):
    r = medmaas(*args)
    assert r.returncode == 2
    assert message in r.stderr and 'Traceback' not in r.stderr
    assert not (isolated/'runs').exists()  # nothing ran

def test_version_and_a_tampered_model_answer_in_one_line(isolated):
    from medmaas_nb import __version__
    r = medmaas('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'medmaas_nb {__version__}'
    reg = isolated/'registry'/'stale'/'versions'; reg.mkdir(parents=True)  # the folder layout from before MLflow: refused
    r = medmaas('models', env={'MEDMAAS_REGISTRY_DIR': str(isolated/'registry')})
    assert r.returncode == 2 and 'folder layout used before MLflow' in r.stderr and 'Traceback' not in r.stderr

def test_missing_dataset_names_where_it_looked(isolated):
    r = medmaas('data', 'fetch', 'promoters', env={'MEDMAAS_DATA_DIR': str(isolated/'empty')})
    assert r.returncode == 2
    assert 'Looked in' in r.stderr and 'medmaas data fetch promoters' in r.stderr and 'Traceback' not in r.stderr

def test_every_numeric_parameter_has_a_range():
    "A number given with -p is checked against a range (the parameter's own or the well-known one for its name), and the default lies in it."
    from medmaas_nb.tasks import all_tasks, COMMON_PARAMS
    for t in all_tasks().values():
        for name, p in {**COMMON_PARAMS, **t.params}.items():
            if isinstance(p.default, bool) or not isinstance(p.default, (int, float)) or p.choices: continue
            lo, hi = p.bounds(name)
            assert lo is not None and hi is not None, f'{t.name}: parameter {name!r} has no range'
            assert lo <= p.default <= hi, f'{t.name}: default of {name!r} outside [{lo}, {hi}]'
    with pytest.raises(ValueError, match=r"'type_weight' must be in \[0.0, 100.0\]"):
        all_tasks()['medquad-retrieval'].parse_params({'type_weight': '-1'})

def test_a_run_prints_one_line_per_step_and_no_native_notices(tmp_path):
    "A quick run of a Keras task (TensorFlow in every step): one line per finished step and the table on stdout; stderr empty."
    env = {'MEDMAAS_RUNS_DIR': str(tmp_path/'runs'), 'MEDMAAS_REGISTRY_DIR': str(tmp_path/'reg'), 'MLFLOW_TRACKING_URI': '',
           'MEDMAAS_KEYS_FILE': str(tmp_path/'keys.json'), 'MEDMAAS_AUDIT_LOG': str(tmp_path/'audit.jsonl'),
           'MEDMAAS_SIGNING_KEY_FILE': str(tmp_path/'signing.key')}
    r = medmaas('run', 'pneumonia-xray', '--quick', '--no-track', env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.splitlines()
    assert [l.split('] ')[1].split(' done in ')[0] for l in out[:4]] == ['10_data', '20_train', '30_evaluate', '40_serve'], out
    assert out[4].startswith('task ') and out[5].startswith('pneumonia-xray ') and out[6].startswith('reports: ') and len(out) == 7
    assert r.stderr == '', r.stderr[:2000]  # no TensorFlow start-up notices, no ticker (stderr is not a terminal)
    q = medmaas('run', 'diabetes-progression', '--quick', '--no-track', '--quiet', env=env)
    assert q.returncode == 0 and q.stdout.splitlines()[0].startswith('task ') and 'done in' not in q.stdout, q.stdout

def test_a_step_kernel_tells_the_runner_how_far_its_loop_is(tmp_path):
    "The runner's ticker reads what a step's kernel reports: the kernel is started with the file to write it to."
    import json
    from jupyter_client.blocking import BlockingKernelClient
    from medmaas_nb.pipeline import WarmKernel, StepTicker, pipelines_dir
    k = WarmKernel(pipelines_dir()/'10_data.ipynb', 'diabetes-progression', tmp_path)
    try:
        kc = BlockingKernelClient(); kc.load_connection_info(k.ready().get_connection_info()); kc.start_channels()
        code = ("from medmaas_nb.core import progress_scope, report_progress\n"
                "with progress_scope('ridge (2/4)'): report_progress('fold', 3, 10)")
        reply = kc.execute_interactive(code, timeout=60, output_hook=lambda m: None); kc.stop_channels()
        assert reply['content']['status'] == 'ok', reply['content']
        assert json.loads(k.progress_file.read_text()) == {'what': 'ridge (2/4) fold', 'done': 3, 'total': 10}
        assert StepTicker('[t 1/4] 20_train', progress_file=k.progress_file).line(4) == '[t 1/4] 20_train running 0m04s | ridge (2/4) fold 3/10 [###-------]'
        assert not list(tmp_path.iterdir())  # nothing lands in the run folder, where a step may write only what it declares
    finally: k.shutdown()

def test_native_notices_of_a_step_kernel_stay_off_the_terminal_and_real_lines_do_not(tmp_path, capsys):
    "A kernel's file descriptor 2 (TensorFlow's C++ logging) goes to a file; the runner shows what is not a known notice."
    from jupyter_client.blocking import BlockingKernelClient
    from medmaas_nb.pipeline import WarmKernel, pipelines_dir
    k = WarmKernel(pipelines_dir()/'10_data.ipynb', 'diabetes-progression', tmp_path)
    try:
        kc = BlockingKernelClient(); kc.load_connection_info(k.ready().get_connection_info()); kc.start_channels()
        code = ("import os; os.write(2, b'E0000 00:00:1.2 30273 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512.\\n"
                "a native library failed to open its plugin\\n')")
        assert kc.execute_interactive(code, timeout=60, output_hook=lambda m: None)['content']['status'] == 'ok'; kc.stop_channels()
    finally: k.shutdown()
    err = capsys.readouterr().err
    assert 'a native library failed to open its plugin' in err and 'DT_BOOL' not in err

def test_several_tasks_run_one_after_the_other_and_a_failure_does_not_stop_the_rest(isolated):
    bad = isolated/'data'/'uci-promoters'; bad.mkdir(parents=True)
    (bad/'promoters.data').write_text('+,S10,\ttactagcaatacgcttgcgttcggtggttaagtatgtataatgcgcgggcttgtcgt\n')
    r = medmaas('run', 'promoter', 'diabetes-progression', '--quick', '--no-track', env={'MEDMAAS_DATA_DIR': str(isolated/'data')})
    assert r.returncode == 1 and 'error: promoter:' in r.stderr and 'does not match the manifest checksum' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr
    lines = r.stdout.splitlines()
    assert any(l.startswith('[1/2 tasks] promoter FAILED') for l in lines) and any(l.startswith('[2/2 tasks] diabetes-progression ok') for l in lines), r.stdout
    assert (isolated/'runs'/'diabetes-progression').exists()

def test_a_run_id_names_the_run_of_one_task_only(isolated):
    r = medmaas('run', 'promoter', 'diabetes-progression', '--run-id', 'x')
    assert r.returncode == 2 and '--run-id names the run of one task' in r.stderr and not (isolated/'runs').exists()
