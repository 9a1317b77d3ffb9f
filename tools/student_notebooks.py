"""The learner's copies of the tutorials: `solution` cells removed, outputs cleared (see `medmaas_nb.teaching`).

Usage: python tools/student_notebooks.py [--dest lab/tutorials] [--run] [nbs/tutorials/01_clinical.ipynb ...]
`make lab` writes them and opens JupyterLab on them. With `--run`, each copy is executed from top to bottom, as a learner
who has not answered anything yet would run it: it must finish without an error, each exercise saying it is not answered.
"""
import argparse, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from medmaas_nb.teaching import write_student_notebooks

def tutorials()->list[Path]: return sorted((ROOT/'nbs'/'tutorials').glob('[0-9]*.ipynb'))

def run_copy(path:Path, timeout:int=900)->int:
    "Execute one learner's copy in its folder; the number of exercises that said 'not answered yet'."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    text = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    return text.count('not answered yet')

def main_paths(paths:list, dest:Path)->list[Path]:
    "Write the learner's copies of `paths` into `dest`, with the glossary beside them."
    out = write_student_notebooks(paths, dest)
    for extra in (ROOT/'nbs'/'tutorials').glob('*.md'): shutil.copy2(extra, Path(dest)/extra.name)  # the glossary
    return out

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('paths', nargs='*'); ap.add_argument('--dest', default=str(ROOT/'lab'/'tutorials'))
    ap.add_argument('--run', action='store_true', help='execute each copy from top to bottom')
    a = ap.parse_args(argv)
    dest = Path(a.dest)
    out = main_paths([Path(p) for p in a.paths] or tutorials(), dest)
    print(f'{len(out)} learner copies in {dest}')
    if a.run:
        for p in out:
            t0 = time.perf_counter(); n = run_copy(p)
            print(f'ran {p.name} in {time.perf_counter() - t0:.0f} s: {n} exercise(s) not answered yet')

if __name__ == '__main__': main()
