"""Check that medmaas_nb/ is exactly what nbdev_export makes of nbs/, and that the notebooks are nbdev_clean-clean.
Works on a copy, so it never changes the working tree. Exit 1 with the differing files named."""
import filecmp, shutil, subprocess, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parents[1]
bin_dir = Path(sys.executable).parent

def tree(d: Path, pattern: str):
    return {p.relative_to(d).as_posix() for p in d.rglob(pattern) if '.ipynb_checkpoints' not in p.parts and '__pycache__' not in p.parts}

def differing(a: Path, b: Path, pattern: str):
    ta, tb = tree(a, pattern), tree(b, pattern)
    out = sorted(ta ^ tb)
    out += sorted(f for f in ta & tb if not filecmp.cmp(a/f, b/f, shallow=False))
    return out

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    for name in ('settings.ini', 'setup.py', 'README.md'): shutil.copy(root/name, tmp/name)
    shutil.copytree(root/'nbs', tmp/'nbs'); shutil.copytree(root/'medmaas_nb', tmp/'medmaas_nb')
    problems = []
    subprocess.run([str(bin_dir/'nbdev_export')], cwd=tmp, check=True)
    bad = differing(root/'medmaas_nb', tmp/'medmaas_nb', '*.py')
    if bad: problems.append('medmaas_nb/ differs from nbdev_export of nbs/ (edit the notebooks, run nbdev_export, commit both): ' + ', '.join(bad))
    subprocess.run([str(bin_dir/'nbdev_clean')], cwd=tmp, check=True)
    bad = differing(root/'nbs', tmp/'nbs', '*.ipynb')
    if bad: problems.append('notebooks are not clean (run nbdev_clean): ' + ', '.join(bad))
    if problems:
        print('\n'.join(problems)); sys.exit(1)
print('notebooks and exported package are in sync; notebooks are clean')
