"""Throughput and latency of the JSON API's predict: `medmaas serve` (one uvicorn process) against `medmaas serve --ray` with 1 and 2 replicas.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/ray_serve_bench.py [--seconds 10] [--write]

All three servers in one run, one after the other, each started by the `medmaas` command as a subprocess (Ray Serve:
a local Ray of its own, stopped by Ctrl-C, as a user would), the same fitted model (diabetes progression,
StandardScaler + RidgeCV), one input per request, 8 and 32 concurrent keep-alive clients in a closed loop on loopback.
`--write` writes benchmarks/ray_serve.md. Not a test: figures depend on the machine and its load.
"""
import asyncio, json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
from common import parser, publish, machine
from serve_bench import _client, _raw, _cpu, wait_ready, free_port

ROOT = Path(__file__).resolve().parents[1]
TASK = 'diabetes-progression'
CLIENTS = (8, 32)

def measure(port:int, raw:bytes, clients:int, seconds:float)->dict:
    "Closed-loop load for `seconds`: requests/s, p50 and p95 latency (ms), non-200 answers."
    lat, errors = [], []
    async def main():
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*[_client(port, raw, stop_at, lat, errors) for _ in range(clients)])
    t0 = time.perf_counter(); asyncio.run(main()); dt = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {'n': len(lat), 'rps': len(lat) / dt, 'p50': float(np.percentile(ms, 50)), 'p95': float(np.percentile(ms, 95)), 'errors': len(errors)}

def run(args:list, env:dict, body:bytes, key:str, seconds:float)->dict:
    "Start `medmaas serve ARGS`, wait until ready, measure each concurrency, stop it with SIGINT (as Ctrl-C) and time the stop."
    import psutil
    port = free_port(); t0 = time.perf_counter()
    p = subprocess.Popen([str(Path(sys.executable).parent/'medmaas'), 'serve', '--port', str(port), '--models', TASK, *args], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        out['start'] = wait_ready(f'http://127.0.0.1:{port}/v2/health/ready', p, t0, timeout=300)
        raw = _raw(port, f'/api/v1/models/{TASK}/predict', body, {'Authorization': f'Bearer {key}'})
        measure(port, raw, 4, 2.0)  # warm-up (with Ray: every replica sees requests)
        for c in CLIENTS:
            c0 = _cpu(p.pid); out[c] = measure(port, raw, c, seconds)
            out[c]['cpu_ms'] = (_cpu(p.pid) - c0) * 1000 / out[c]['n'] if out[c]['n'] else float('nan')
    finally:
        procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)] if p.poll() is None else []
        t1 = time.perf_counter(); p.send_signal(signal.SIGINT)
        try: out['rc'] = p.wait(120)
        except subprocess.TimeoutExpired: p.kill(); out['rc'] = p.wait()
        out['stop'] = time.perf_counter() - t1
        _, alive = psutil.wait_procs(procs, timeout=30)
        out['left'] = [q.pid for q in alive if q.is_running() and q.status() != psutil.STATUS_ZOMBIE]
        for q in alive:  # ours: nothing of this run may outlive it
            try: q.kill()
            except psutil.NoSuchProcess: pass
    return out

def main():
    ap = parser(__file__, __doc__); ap.add_argument('--seconds', type=float, default=10.0, help='seconds per concurrency level')
    a = ap.parse_args()
    from medmaas_nb.tasks import get_task
    from medmaas_nb.clinical import diabetes_candidates
    from medmaas_nb.registry import Registry, save_model
    from medmaas_nb.security import KeyStore
    tmp = Path(tempfile.mkdtemp(prefix='medmaas-ray-bench-'))
    key = KeyStore(tmp/'keys.json').create('bench')
    t = get_task(TASK); ds = t.load(); X, y = ds['train']
    model = diabetes_candidates()['ridge'].fit(X, y)
    save_model(model, tmp/'m'); reg = Registry(tmp/'registry'); reg.register(TASK, tmp/'m', {'task': TASK, 'model': {'runtime': 'sklearn'}})
    rec = t.input_spec.to_records(ds['test'][0].iloc[:1])[0]
    body = json.dumps({'instance': rec}).encode()
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'MEDMAAS_REGISTRY_DIR': str(tmp/'registry'), 'MLFLOW_TRACKING_URI': reg.tracking_uri,
           'MEDMAAS_KEYS_FILE': str(tmp/'keys.json'), 'MEDMAAS_RATE_LIMIT': '1e9', 'MEDMAAS_AUDIT_LOG': str(tmp/'audit.jsonl')}
    servers = {'`medmaas serve` (uvicorn, 1 process)': [], 'Ray Serve, 1 replica': ['--ray', '--replicas', '1'],
               'Ray Serve, 2 replicas': ['--ray', '--replicas', '2']}
    res = {}
    for name, args in servers.items():
        print(f'{name} ...', file=sys.stderr, flush=True)
        res[name] = run(args, env, body, key, a.seconds)
        print(f"  ready in {res[name]['start']:.1f} s; " + '; '.join(f"{c} clients {res[name][c]['rps']:.0f} req/s" for c in CLIENTS), file=sys.stderr, flush=True)
    plain = res[next(iter(servers))]
    rows = ['| server | start-up to ready | ' + ' | '.join(f'{c} clients: req/s | p50 | p95 | vs plain | CPU per request' for c in CLIENTS) + ' | errors | stop (Ctrl-C) |',
            '|---|---|' + '---|---|---|---|---|' * len(CLIENTS) + '---|---|']
    for name, r in res.items():
        cells = ' | '.join(f"{r[c]['rps']:.0f} | {r[c]['p50']:.1f} ms | {r[c]['p95']:.1f} ms | x{r[c]['rps'] / plain[c]['rps']:.2f} | {r[c]['cpu_ms']:.2f} ms" for c in CLIENTS)
        rows.append(f"| {name} | {r['start']:.1f} s | {cells} | {sum(r[c]['errors'] for c in CLIENTS)} | "
                    f"{r['stop']:.1f} s, exit {r['rc']}{', processes left: ' + str(r['left']) if r['left'] else ''} |")
    load_avg = os.getloadavg()
    notes = ['', f"Each cell: {a.seconds:g} s of closed-loop load (keep-alive connections, asyncio, on the same machine as the servers), "
             "one input per request to `/api/v1/models/diabetes-progression/predict` with an API key, audit log and metrics on, rate limit "
             "lifted. \"vs plain\": requests/s over those of `medmaas serve` at the same concurrency. Start-up: process start until "
             "`/v2/health/ready` answers 200 (with Ray: starting a local Ray, Serve's controller and proxy, and the replicas). "
             "CPU per request: user + system CPU time of the server's whole process tree (with Ray: the driver, GCS, raylet, "
             "Serve's controller and proxy, the replicas) over the measurement, divided by the requests answered; it bounds "
             "what a core can give (1000 / ms = req/s per core) and is the figure least moved by other jobs on the machine. "
             "Stop: SIGINT until the command exited; \"exit 0\" and no processes left means Serve and Ray shut down cleanly.",
             '', "Why Ray Serve is slower here: every request crosses one more Python process (Serve's HTTP proxy, which "
             "parses the HTTP request, routes it and hands the ASGI messages to a replica over Ray's RPC) besides the replica that "
             "runs the same app as `medmaas serve`; for a model that predicts in a fraction of a millisecond, that hop is most of "
             "the cost. On two cores shared by the proxy, the replicas, the load generator and other jobs, a second replica adds "
             "no core, only contention. Replicas pay off when they bring cores (more nodes, or a larger machine) or when a "
             "prediction costs far more than the hop, and for the replacement of a failed replica (tests/test_ray_serve.py).",
             '', f"Load average at the end: {load_avg[0]:.1f} / {load_avg[1]:.1f} / {load_avg[2]:.1f} (1 / 5 / 15 min): a high load means other "
             "jobs ran beside the benchmark and the absolute figures are noisy; the three servers ran one after the other in one run."]
    intro = (f'Machine: {machine()} `medmaas serve` against `medmaas serve --ray --replicas N` on a local Ray (replicas of half a CPU each). '
             f'Reproduce: `PYTHONPATH=$PWD .venv/bin/python benchmarks/ray_serve_bench.py --seconds {a.seconds:g} --write`.')
    publish(__file__, 'Serving on Ray: `medmaas serve --ray` against `medmaas serve`', intro, '\n'.join(rows + notes), a.write, stem='ray_serve')

if __name__ == '__main__': main()
