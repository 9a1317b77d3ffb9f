"""Serve the same scikit-learn model, and the same Keras model, with `mlflow models serve --env-manager local` and with
`medmaas serve`, and measure both on loopback: start-up to ready, single-row p50/p99 one request at a time, throughput and
p99 with 8 and 32 concurrent clients.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/serve_bench.py [--seconds 5] [--sequential 300] [--no-keras] [--write]

`--write` puts the table into benchmarks/README.md. Not a test: figures depend on the machine and its load.
"""
import argparse, asyncio, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TASK = 'diabetes-progression'
KTASK = 'pneumonia-xray'  # the Keras model: the imaging task's served CNN (image -> probability)

async def _request(reader, writer, raw:bytes)->int:
    writer.write(raw); await writer.drain()
    head = await reader.readuntil(b'\r\n\r\n')
    status = int(head[9:12]); n = 0
    for line in head.split(b'\r\n'):
        if line.lower().startswith(b'content-length:'): n = int(line.split(b':')[1])
    await reader.readexactly(n); return status

def _raw(port:int, path:str, body:bytes, headers:dict)->bytes:
    h = ''.join(f'{k}: {v}\r\n' for k, v in headers.items())
    return (f'POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{h}\r\n').encode() + body

async def _client(port, raw, stop_at, lat, errors, n_max=None):
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    i = 0
    while time.perf_counter() < stop_at and (n_max is None or i < n_max):
        t0 = time.perf_counter(); s = await _request(reader, writer, raw); lat.append(time.perf_counter() - t0); i += 1
        if s != 200: errors.append(s)
    writer.close()

def load(port:int, raw:bytes, clients:int, seconds:float=None, n:int=None)->dict:
    "Closed-loop load: `clients` connections each sending requests back to back (keep-alive)."
    lat, errors = [], []
    async def main():
        stop_at = time.perf_counter() + (seconds or 1e9)
        await asyncio.gather(*[_client(port, raw, stop_at, lat, errors, n) for _ in range(clients)])
    t0 = time.perf_counter(); asyncio.run(main()); dt = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {'n': len(lat), 'rps': len(lat) / dt, 'p50': float(np.percentile(ms, 50)), 'p99': float(np.percentile(ms, 99)), 'errors': len(errors)}

def wait_ready(url:str, proc, t0:float, timeout:float=180)->float:
    "Seconds from `t0` (just before the server process was started) until `url` answers 200."
    import httpx
    with httpx.Client(timeout=1) as client:  # one client: a fresh httpx.get per poll costs tens of ms (SSL context) of the measurement itself
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None: raise RuntimeError(f'server exited with {proc.returncode}')
            try:
                if client.get(url).status_code == 200: return time.perf_counter() - t0
            except httpx.HTTPError: pass
            time.sleep(0.01)
    raise TimeoutError(url)

def free_port():
    import socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--seconds', type=float, default=5.0); ap.add_argument('--sequential', type=int, default=300)
    ap.add_argument('--no-keras', action='store_true'); ap.add_argument('--write', action='store_true'); a = ap.parse_args()
    os.environ.setdefault('PYTHONPATH', str(ROOT))
    from medmaas_nb.tasks import get_task
    from medmaas_nb.clinical import diabetes_candidates
    from medmaas_nb.registry import Registry, save_model
    from medmaas_nb.security import KeyStore
    import mlflow.sklearn
    tmp = Path(tempfile.mkdtemp(prefix='medmaas-bench-'))
    key = KeyStore(tmp/'keys.json').create('bench')
    t = get_task(TASK); ds = t.load(); X, y = ds['train']
    model = diabetes_candidates()['ridge'].fit(X, y)  # the same fitted model for both servers
    save_model(model, tmp/'m'); Registry(tmp/'registry').register(TASK, tmp/'m', {'task': TASK, 'model': {'runtime': 'sklearn'}})
    mlflow.sklearn.save_model(model, str(tmp/'mlflow-model'), input_example=X.iloc[:1])
    rec = t.input_spec.to_records(ds['test'][0].iloc[:1])[0]
    # in-process reference: what one prediction costs without HTTP
    ip = []
    for _ in range(300):
        t0 = time.perf_counter(); t.predict(model, t.input_spec.validate([rec])); ip.append((time.perf_counter() - t0) * 1000)
    inproc = float(np.percentile(ip, 50))
    # ... and on the path the service takes for this model (checked float array, column-major, no DataFrame)
    import warnings, sklearn
    ipa = []
    with warnings.catch_warnings(), sklearn.config_context(assume_finite=True):
        warnings.simplefilter('ignore', UserWarning)
        for _ in range(300):
            t0 = time.perf_counter(); t.predict(model, np.asfortranarray(t.input_spec.validate([rec], as_array=True))); ipa.append((time.perf_counter() - t0) * 1000)
    inproc = (inproc, float(np.percentile(ipa, 50)))
    servers = {}
    mlflow_body = json.dumps({'dataframe_split': {'columns': list(rec), 'data': [list(rec.values())]}}).encode()
    servers['MLflow 3.17 (`mlflow models serve`)'] = run_mlflow(tmp/'mlflow-model', mlflow_body, a)
    v2 = {'inputs': [{'name': 'input', 'datatype': 'FP64', 'shape': [1, len(rec)], 'data': list(rec.values())}]}
    servers.update(run_medmaas(tmp, tmp/'registry', key, TASK, {'instance': rec}, v2, a))
    tables = [report(servers, inproc, a, 'Tabular model: diabetes progression, StandardScaler + RidgeCV')]

    if not a.no_keras:
        kt = get_task(KTASK)
        import mlflow.keras
        from medmaas_nb.core import seed_everything
        from medmaas_nb.imaging_networks import build_member, build_served
        seed_everything(0)
        kmodel = build_served('baseline_cnn', [build_member('baseline_cnn', 's0_')])  # untrained weights: the timings do not depend on them
        save_model(kmodel, tmp/'k', 'keras'); Registry(tmp/'kregistry').register(KTASK, tmp/'k', {'task': KTASK, 'model': {'runtime': 'keras'}})
        mlflow.keras.save_model(kmodel, str(tmp/'mlflow-keras'))
        img = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)
        ip = []
        for _ in range(100):
            t0 = time.perf_counter(); kt.predict(kmodel, kt.input_spec.validate([img[0, ..., 0].tolist()])); ip.append((time.perf_counter() - t0) * 1000)
        kinproc = float(np.percentile(ip, 50))
        kservers = {'MLflow 3.17 (`mlflow models serve`)': run_mlflow(tmp/'mlflow-keras', json.dumps({'inputs': img.tolist()}).encode(), a)}
        kv2 = {'inputs': [{'name': 'image', 'datatype': 'FP32', 'shape': [1, 28, 28, 1], 'data': img.reshape(-1).tolist()}]}
        kservers.update(run_medmaas(tmp, tmp/'kregistry', key, KTASK, {'instance': img[0, ..., 0].tolist()}, kv2, a))
        tables.append(report(kservers, kinproc, a, 'Keras model: pneumonia-xray served CNN (baseline_cnn, 28 x 28 grey image -> probability; dynamic batching on)'))

    table = '\n\n'.join(tables) + '\n\n' + footer(a)
    print(table)
    if a.write:
        readme = ROOT/'benchmarks'/'README.md'
        text = readme.read_text() if readme.exists() else ''
        start_mark, end_mark = '<!-- bench:start -->', '<!-- bench:end -->'
        block = f'{start_mark}\n{table}\n{end_mark}'
        text = text[:text.index(start_mark)] + block + text[text.index(end_mark) + len(end_mark):] if start_mark in text else text + '\n' + block + '\n'
        readme.write_text(text)

def run_mlflow(model_dir:Path, body:bytes, a)->dict:
    port = free_port(); t0 = time.perf_counter()
    p = subprocess.Popen([str(Path(sys.executable).parent/'mlflow'), 'models', 'serve', '-m', str(model_dir), '--env-manager', 'local',
                          '-p', str(port), '-h', '127.0.0.1'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, 'PATH': f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"})  # it runs `uvicorn` from PATH
    try:
        start = wait_ready(f'http://127.0.0.1:{port}/ping', p, t0)
        return bench(port, _raw(port, '/invocations', body, {}), start, a, p.pid)
    finally: p.terminate(); p.wait(20)

def run_medmaas(tmp:Path, registry:Path, key:str, task:str, api_body:dict, v2_body:dict, a)->dict:
    port = free_port()
    env = {**os.environ, 'MEDMAAS_REGISTRY_DIR': str(registry), 'MEDMAAS_KEYS_FILE': str(tmp/'keys.json'), 'MEDMAAS_RATE_LIMIT': '1e9',
           'MEDMAAS_AUDIT_LOG': str(tmp/f'audit-{task}.jsonl')}
    t0 = time.perf_counter()
    p = subprocess.Popen([str(Path(sys.executable).parent/'medmaas'), 'serve', '--port', str(port), '--models', task], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        start = wait_ready(f'http://127.0.0.1:{port}/v2/health/ready', p, t0)
        hdr = {'Authorization': f'Bearer {key}'}
        out['medmaas (`/api/v1/.../predict`)'] = bench(port, _raw(port, f'/api/v1/models/{task}/predict', json.dumps(api_body).encode(), hdr), start, a, p.pid)
        out['medmaas (`/v2/.../infer`)'] = bench(port, _raw(port, f'/v2/models/{task}/infer', json.dumps(v2_body).encode(), hdr), start, a, p.pid)
    finally: p.terminate(); p.wait(20)
    return out

def _cpu(pid:int)->float:
    "CPU seconds (user + system) used so far by a process and its children: a figure that other jobs on the machine do not inflate."
    import psutil
    p = psutil.Process(pid); procs = [p, *p.children(recursive=True)]
    return sum(sum(q.cpu_times()[:2]) for q in procs)

def bench(port, raw, start, a, pid)->dict:
    load(port, raw, 1, n=30)  # warm-up
    c0 = _cpu(pid); r = {'start': start, 'seq': load(port, raw, 1, n=a.sequential)}
    r['cpu_ms'] = (_cpu(pid) - c0) * 1000 / r['seq']['n']
    for c in (8, 32): r[c] = load(port, raw, c, seconds=a.seconds)
    return r

def report(servers:dict, inproc:float, a, title:str)->str:
    rows = [f'**{title}**', '',
            '| server | start-up to ready | single-row p50 | single-row p99 | server CPU per request | 8 clients: req/s | 8 clients: p99 | 32 clients: req/s | 32 clients: p99 | errors |',
            '|---|---|---|---|---|---|---|---|---|---|']
    for name, r in servers.items():
        rows.append(f"| {name} | {r['start']:.2f} s | {r['seq']['p50']:.2f} ms | {r['seq']['p99']:.2f} ms | {r['cpu_ms']:.2f} ms | {r[8]['rps']:.0f} | {r[8]['p99']:.1f} ms | "
                    f"{r[32]['rps']:.0f} | {r[32]['p99']:.1f} ms | {sum(r[k]['errors'] for k in ('seq', 8, 32))} |")
    ml = next(iter(servers.values())); me = servers['medmaas (`/api/v1/.../predict`)']
    inproc_text = (f'p50 {inproc[0]:.2f} ms through a DataFrame, {inproc[1]:.2f} ms on the checked-array path the service takes'
                   if isinstance(inproc, tuple) else f'p50 {inproc:.2f} ms')
    rows += ['', f"In-process prediction (input validation + `Task.predict`, one input): {inproc_text}. "
             f"medmaas (JSON API) / MLflow: throughput x{me[8]['rps'] / ml[8]['rps']:.1f} (8 clients), x{me[32]['rps'] / ml[32]['rps']:.1f} (32 clients); "
             f"single-row p50 x{ml['seq']['p50'] / me['seq']['p50']:.1f} faster; server CPU per request x{ml['cpu_ms'] / me['cpu_ms']:.1f} less; start-up x{ml['start'] / me['start']:.1f} faster."]
    return '\n'.join(rows)

def footer(a)->str:
    load_avg = os.getloadavg()
    return '\n'.join(['Server CPU per request (user + system CPU time of the server process tree over the sequential requests, divided by their number) '
             'is the figure least affected by other jobs on a shared machine: it bounds the throughput one core can give (1000 / ms = req/s per core).',
             '', f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
             f"load average {load_avg[0]:.1f} / {load_avg[1]:.1f} / {load_avg[2]:.1f} (1 / 5 / 15 min) at the end: "
             + ('no more than the benchmark itself puts there (its server and load generator): a quiet machine' if load_avg[1] <= os.cpu_count() else
                'the machine was **shared with other jobs** while this ran, so absolute figures are noisy') + ' '
             f"(both servers ran under the same conditions, one after the other). The same model for both servers; "
             f"one uvicorn worker each; load generator: asyncio, keep-alive connections, closed loop, {a.seconds:g} s per concurrency level, "
             f"{a.sequential} sequential requests; medmaas with API-key check, audit log and metrics on."])

if __name__ == '__main__': main()
