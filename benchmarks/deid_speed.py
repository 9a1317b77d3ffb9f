"""De-identification time on adversarial 18,000-character inputs: `find_phi` must stay linear in the length of a note.

A regular expression with nested or overlapping repetition (`[\\w.+-]+@...` tried from every word boundary of
`a.a.a.a...`) backtracks quadratically or worse on text built to defeat it; a served model that logs its questions through
the de-identifier would then stall on one crafted request. Each input below is 18,000 characters of one repeated unit
(runs of word characters and dots, hyphens, at-signs, digits and separators, capitalised words, URL and e-mail prefixes),
plus ordinary clinical text (the labelled synthetic notes repeated to the same length). Each time is the best of `--repeats`
calls of `find_phi`, wall-clock and CPU time of this process (on a busy machine the CPU time is the steadier figure); the
goal is under 50 ms for every input.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/deid_speed.py            # print the table
    PYTHONPATH=$PWD .venv/bin/python benchmarks/deid_speed.py --write    # and write benchmarks/deid_speed.md
"""
import platform, sys, time
from pathlib import Path

N = 18_000

def adversarial(n:int=N)->dict:
    "Named inputs of `n` characters, each one unit repeated: the shapes that make backtracking regexes slow."
    units = {'word.word.': 'a.', 'word-word-': 'a-', 'Name-Name-': 'Ab-', 'www.www.': 'www.', 'a@b.': 'a@b.', 'at-signs': 'a@',
             'digits': '1', 'digit-digit-': '1-', 'digit.digit.': '1.', 'digit space': '1 ', 'digit/digit/': '1/', '(1(1': '(1',
             '+1 +1 ': '+1 ', 'capitals': 'A', 'capitalised words': 'Ab ', 'Ab, Ab, ': 'Ab, ', 'Dr. Ab ': 'Dr. Ab ', 'http://': 'http://a.',
             'letters': 'a', 'dots': '.', 'spaces': ' ', 'mixed': 'aA1.-@ /:'}
    out = {k: (u * (n // len(u) + 1))[:n] for k, u in units.items()}
    notes = Path(__file__).resolve().parents[1]/'tests'/'data'
    from medmaas_nb.deid import parse_marked, read_notes
    text = '\n'.join(parse_marked(m)[0] for f in sorted(notes.glob('synthetic_notes*.txt')) for m in read_notes(f))
    out['clinical notes'] = (text * (n // len(text) + 1))[:n]
    return out

def best_time(fn, text:str, repeats:int)->tuple[float, float]:
    "Least wall-clock and least CPU seconds of this process over `repeats` calls of `fn(text)` (CPU time: what other jobs on a busy machine change least)."
    wall = cpu = float('inf')
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time(); fn(text)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu

def table(repeats:int=3)->tuple[str, float]:
    from medmaas_nb.deid import find_phi
    find_phi('warm up: Dr. Alan Whitaker, 617-555-0143')
    rows, worst = ['| input (18,000 characters) | `find_phi`, wall-clock ms | `find_phi`, CPU ms |', '|---|---|---|'], 0.0
    for name, text in adversarial().items():
        wall, cpu = best_time(find_phi, text, repeats); worst = max(worst, wall)
        rows.append(f'| {name} | {wall * 1000:.1f} | {cpu * 1000:.1f} |')
    return '\n'.join(rows), worst

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import parser, write_table
    ap = parser(__file__, __doc__); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    body, worst = table(a.repeats)
    body += (f'\n\nSlowest input: {worst * 1000:.1f} ms wall-clock (goal: under 50 ms). Python {platform.python_version()} on '
             f'{platform.machine()}; best of {a.repeats} calls per input.')
    print(body)
    if a.write:
        print(write_table(__file__, 'De-identification time on adversarial inputs',
                          'Reproduce: `PYTHONPATH=$PWD .venv/bin/python benchmarks/deid_speed.py --write`.', body))
