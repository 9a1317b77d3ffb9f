"""PHI recall per Safe Harbor kind: this package's rules, presidio-analyzer's pattern recognizers, and both together.

The notes are the labelled synthetic sets in `tests/data/` (the table is on the second held-out set, whose kinds are the
Safe Harbor identifiers; the other sets get one line each). presidio-analyzer runs with every predefined recognizer of its
default registry and the no-op NLP engine it ships (`NoOpNlpEngine`): its spaCy-based recognizer (names, places, dates in
free form) needs a spaCy model, a download that is not a PyPI wheel, so offline it finds none of those. tldextract, used by
its e-mail recognizer, is given its bundled public-suffix snapshot instead of fetching the list. "presidio" takes every
result (the engine's default threshold, 0); "presidio >= 0.4" only results scored 0.4 or more; "combined" masks the union
of this package's spans and every presidio result. A gold item counts as found when all its letters and digits are masked;
precision is the share of masked spans that touch a gold item (`medmaas_nb.deid.evaluate_deid`).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/deid_compare.py            # print the table
    PYTHONPATH=$PWD .venv/bin/python benchmarks/deid_compare.py --write    # and write benchmarks/deid_compare.md
"""
import logging, platform, sys, time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1]/'tests'/'data'
SETS = {'easy': 'synthetic_notes.txt', 'development': 'synthetic_notes_dev.txt', 'held-out (first)': 'synthetic_notes_heldout.txt',
        'tuning': 'synthetic_notes_tune.txt', 'held-out, all kinds': 'synthetic_notes_heldout2.txt'}

def presidio_engine():
    "presidio-analyzer's default recognizers with the no-op NLP engine, offline."
    import tldextract, tldextract.tldextract as tx
    tx.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())  # the bundled snapshot, no fetch
    logging.getLogger('presidio-analyzer').setLevel(logging.ERROR)
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    return AnalyzerEngine(nlp_engine=NoOpNlpEngine([{'lang_code': 'en', 'model_name': 'none'}]))

def finders()->dict:
    "Name -> function from a text to its spans."
    from medmaas_nb.deid import find_phi
    eng = presidio_engine()
    pres = lambda t: eng.analyze(t, language='en')
    return {'ours': find_phi, 'presidio': pres, 'presidio >= 0.4': lambda t: [r for r in pres(t) if r.score >= 0.4],
            'combined': lambda t: find_phi(t) + pres(t)}

def table()->str:
    from medmaas_nb.deid import evaluate_deid, read_notes, parse_marked
    fs = finders(); names = list(fs)
    res = {s: {n: evaluate_deid(read_notes(DATA/f), f_) for n, f_ in fs.items()} for s, f in SETS.items()}
    h = res['held-out, all kinds']
    out = ['**Second held-out set (98 notes, 212 PHI items), recall per Safe Harbor kind**', '',
           '| kind | items | ' + ' | '.join(names) + ' |', '|---|---|' + '---|' * len(names)]
    notes = read_notes(DATA/SETS['held-out, all kinds'])
    for k in h['ours']['recall_by_kind']:
        n = sum(m.count(f'[[{k}|') for m in notes)
        out.append(f'| {k} | {n} | ' + ' | '.join(f"{h[x]['recall_by_kind'][k]:.3f}" for x in names) + ' |')
    out.append('| **all: recall** | 212 | ' + ' | '.join(f"**{h[x]['recall']:.3f}**" for x in names) + ' |')
    out.append('| **all: precision** | | ' + ' | '.join(f"**{h[x]['precision']:.3f}**" for x in names) + ' |')
    out += ['', '**Every labelled set: recall / precision**', '', '| set | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
    for s in SETS: out.append(f'| {s} | ' + ' | '.join(f"{res[s][x]['recall']:.3f} / {res[s][x]['precision']:.3f}" for x in names) + ' |')
    text = '\n'.join(parse_marked(m)[0] for f in SETS.values() for m in read_notes(DATA/f))
    text = (text * (18_000 // len(text) + 1))[:18_000]
    times = {}
    for n, f_ in fs.items():
        f_(text); best = float('inf')
        for _ in range(3): t0 = time.process_time(); f_(text); best = min(best, time.process_time() - t0)
        times[n] = best
    out += ['', '**CPU time for one 18,000-character note** (the synthetic notes joined; best of 3): ' +
            ', '.join(f'{n} {t * 1000:.0f} ms' for n, t in times.items()) + '.']
    return '\n'.join(out)

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import parser, write_table
    a = parser(__file__, __doc__).parse_args()
    from importlib.metadata import version
    body = table() + (f'\n\nThis package\'s rules were tuned on the development and tuning sets, never on the second held-out set. '
                      f'presidio-analyzer {version("presidio-analyzer")}, Python {platform.python_version()} on {platform.machine()}.')
    print(body)
    if a.write:
        print(write_table(__file__, 'De-identification: these rules vs presidio-analyzer',
                          'Reproduce: `PYTHONPATH=$PWD .venv/bin/python benchmarks/deid_compare.py --write`.', body))
