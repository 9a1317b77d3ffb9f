"""`medmaas run --ray`: each task's run as a Ray task on a local Ray started by the command. The figures are those of a
run without Ray, a failing task is reported while the others finish, and Ctrl-C leaves no kernel, service or Ray
process behind."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import psutil
import pytest

BIN = Path(sys.executable).parent/'medmaas'

@pytest.fixture
def env(tmp_path):
    "Runs, registry and cache in a temporary folder; a data folder whose promoter file is damaged."
    bad = tmp_path/'data'/'uci-promoters'; bad.mkdir(parents=True)
    (bad/'promoters.data').write_text('+,S10,\ttactagcaatacgcttgcgttcggtggttaagtatgtataatgcgcgggcttgtcgt\n')
    return {**os.environ, 'MEDMAAS_RUNS_DIR': str(tmp_path/'runs'), 'MEDMAAS_REGISTRY_DIR': str(tmp_path/'registry'),
            'MEDMAAS_CACHE_DIR': str(tmp_path/'cache'), 'MEDMAAS_DATA_DIR': str(tmp_path/'data'), 'MLFLOW_TRACKING_URI': ''}

def left_behind(runs_dir:str)->list[str]:
    "Processes other than this one that were started with this test's runs folder (Ray, workers, kernels, services)."
    out = []
    for p in psutil.process_iter(['pid', 'name']):
        if p.pid == os.getpid(): continue
        try:
            if p.environ().get('MEDMAAS_RUNS_DIR') == runs_dir: out.append(f"{p.pid} {p.info['name']}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess): pass
    return out

def gone(runs_dir:str, timeout:float=30)->list[str]:
    t0 = time.monotonic()
    while (left := left_behind(runs_dir)) and time.monotonic() - t0 < timeout: time.sleep(0.5)
    return left

def test_tasks_on_ray_give_the_figures_of_a_run_without_ray_and_a_failure_is_reported(env):
    r = subprocess.run([str(BIN), 'run', 'diabetes-progression', 'promoter', '--quick', '--no-track', '--ray'],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr  # one task failed
    assert 'error: promoter:' in r.stderr and 'does not match the manifest checksum' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert sum(l.startswith('[1/2 tasks] ') for l in lines) == 1 and sum(l.startswith('[2/2 tasks] ') for l in lines) == 1, r.stdout
    table = lines[lines.index(next(l for l in lines if l.startswith('task '))) + 1:][:2]
    assert table[0].split()[:2] == ['diabetes-progression', 'ok'] and table[1].split()[:2] == ['promoter', 'FAILED'], r.stdout
    runs = Path(env['MEDMAAS_RUNS_DIR'])
    (on_ray,) = (runs/'diabetes-progression').iterdir()
    assert {'10_data.html', '20_train.html', '30_evaluate.html', '40_serve.html', 'metrics.json'} <= {p.name for p in on_ray.iterdir()}
    s = subprocess.run([str(BIN), 'run', 'diabetes-progression', '--quick', '--no-track', '--quiet'], capture_output=True, text=True, env=env, timeout=600)
    assert s.returncode == 0, s.stderr
    (plain,) = [d for d in (runs/'diabetes-progression').iterdir() if d != on_ray]
    m_ray, m_plain = (json.loads((d/'metrics.json').read_text()) for d in (on_ray, plain))
    assert m_ray['test'] == m_plain['test'] and m_ray['cv'] == m_plain['cv']  # to the last digit
    assert not gone(env['MEDMAAS_RUNS_DIR'])

def test_ctrl_c_stops_every_task_its_kernels_and_its_service(env):
    p = subprocess.Popen([str(BIN), 'run', 'diabetes-progression', 'breast-cancer-diagnosis', '--quick', '--no-track', '--ray'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    runs = Path(env['MEDMAAS_RUNS_DIR'])
    try:
        t0 = time.monotonic()  # both runs have started (their first step's notebook is being written)
        while len(list(runs.glob('*/*/10_data.ipynb'))) < 2 and time.monotonic() - t0 < 120 and p.poll() is None: time.sleep(0.2)
        assert len(list(runs.glob('*/*/10_data.ipynb'))) == 2, p.communicate()
        running = [int(x.split()[0]) for x in left_behind(env['MEDMAAS_RUNS_DIR'])]
        def cmdline(pid):
            try: return ' '.join(psutil.Process(pid).cmdline())
            except psutil.Error: return ''
        assert any('ipykernel' in cmdline(pid) for pid in running), 'no step kernel running before Ctrl-C'
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, out + err
    assert 'interrupted' in err and 'Traceback' not in err, err
    assert not list(runs.glob('*/*/metrics.json'))  # no run got to the end
    assert not gone(env['MEDMAAS_RUNS_DIR']), 'processes left running'

def test_an_address_nobody_answers_at_fails_at_once_in_one_line(env):
    from conftest import free_port
    t0 = time.monotonic()
    r = subprocess.run([str(BIN), 'run', 'diabetes-progression', '--quick', '--ray', f'127.0.0.1:{free_port()}'],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and 'Nothing answers at the Ray address 127.0.0.1:' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert time.monotonic() - t0 < 60 and not Path(env['MEDMAAS_RUNS_DIR']).exists()
