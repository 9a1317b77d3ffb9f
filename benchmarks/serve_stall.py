"""Liveness and readiness probes while the service computes the largest requests it accepts.

A text model (abstract-topic, quick fit) and a table model are served by `medmaas serve` in its own process. Three
client threads send, back to back, the largest requests the service accepts (10,000 texts in just under the 2 MiB JSON
limit, by the JSON API and by v2), while 100 probes (liveness and readiness, alternating, 20 ms apart) and a small
request from another key every tenth probe are timed. The goal: the slowest probe under 100 ms (the slowest, not a
percentile). With `--baseline DIR`, the same load against the code checked out in DIR (e.g. a `git worktree` of an older
commit), in the same sitting, on the same registry.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/serve_stall.py [--baseline DIR] [--repeats 2] [--write]

Not a test: figures depend on the machine and its load.
"""
import os, sys, tempfile
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT/'tests'), str(ROOT/'benchmarks')]
from common import parser, machine, publish

def loads()->dict:
    "The two loads: the largest requests this service accepts, and the request that stalled the service before the limits."
    from test_hostile import _largest_requests, v2, api, infer, TXT
    api_body, v2_body = _largest_requests()
    return {'largest accepted: 10,000 texts in 2 MiB (JSON API and v2)': [(api(TXT), api_body), (infer(TXT), v2_body)],
            'v2 request of 1.5 million strings (7.5 MB)': [(infer(TXT), v2('text', 'BYTES', [1_500_000], ['a'] * 1_500_000).encode())]}

def measure(code_dir:Path, reg_root:Path, work:Path, label:str, bodies:list)->dict:
    "Start `medmaas serve` from `code_dir` on the registry, run the load and the probes, stop it."
    from medmaas_nb.client import ServiceProcess
    from medmaas_nb.security import KeyStore
    from test_hostile import probe_under_load, TXT, TAB, GOOD
    keys = KeyStore(work/f'{label}-keys.json'); key, other = keys.create('load'), keys.create('bystander')
    env = {'PYTHONPATH': str(code_dir), 'MEDMAAS_REGISTRY_DIR': str(reg_root), 'MEDMAAS_KEYS_FILE': str(keys.path),
           'MEDMAAS_AUDIT_LOG': str(work/f'{label}-audit.jsonl'), 'MEDMAAS_AUDIT_KEY_FILE': str(work/'audit.key'),
           'MEDMAAS_RATE_LIMIT': '100000', 'MEDMAAS_ROW_RATE_LIMIT': '10000000'}
    here = os.getcwd(); os.chdir(code_dir)  # `python -c` puts the working folder first on the path: the code measured is code_dir's
    try:
        with ServiceProcess([TXT, TAB], env=env, timeout=300) as sp:
            took, statuses, small = probe_under_load(sp.url, key, other, bodies, small=(TAB, GOOD))
    finally: os.chdir(here)
    ms = took * 1000
    return {'code': label, 'probes': len(ms), 'p50': np.median(ms), 'p99': np.percentile(ms, 99), 'max': ms.max(),
            'large served': statuses.count(200), 'large refused': len(statuses) - statuses.count(200),
            'small ok': f'{small.count(200)}/{len(small)}'}

def main():
    ap = parser(__file__, __doc__)
    ap.add_argument('--baseline', type=Path, help='a checkout of other code to measure beside this one')
    ap.add_argument('--repeats', type=int, default=2)
    a = ap.parse_args()
    from medmaas_nb.registry import Registry
    from test_hostile import _register, TXT, TAB
    work = Path(tempfile.mkdtemp()); reg = Registry(work/'registry')
    for t in (TXT, TAB): _register(reg, work, t)
    variants = [('this code', ROOT)] + ([('baseline', a.baseline.resolve())] if a.baseline else [])
    rows = []
    for load, bodies in loads().items():
        for r in range(a.repeats):  # alternate, so that both meet the machine in the same state
            for label, d in variants:
                row = measure(d, reg.root, work, f'{label}-{r}-{len(rows)}', bodies); row.update(code=label, load=load); rows.append(row)
                print({k: (round(float(v), 1) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}, flush=True)
    cols = ['load', 'code', 'probes', 'p50', 'p99', 'max', 'large served', 'large refused', 'small ok']
    table = '| ' + ' | '.join(c + (' (ms)' if c in ('p50', 'p99', 'max') else '') for c in cols) + ' |\n|' + '---|' * len(cols) + '\n'
    table += ''.join('| ' + ' | '.join(f'{r[c]:.1f}' if isinstance(r[c], (float, np.floating)) else str(r[c]) for c in cols) + ' |\n' for r in rows)
    intro = (f'{machine()} Probe times in milliseconds, measured by the client. '
             '"large served / refused": load requests answered 200, or refused with a 4xx (413: over the body or JSON limit). '
             'Goal: the slowest probe under 100 ms.')
    publish(__file__, 'Probes under the largest requests', intro, table, a.write, a.baseline,
            ', a checkout given with `--baseline`, run in the same way in alternation (`git worktree add DIR COMMIT`, then `--baseline DIR --repeats 2 --write`)')

if __name__ == '__main__': main()
