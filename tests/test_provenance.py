"Provenance: `code_version` names the commit a model was built from, says when the tree had changes, and falls back to the package version."
import re, subprocess
from medmaas_nb import __version__
from medmaas_nb.registry import code_version

def _git(d, *args): return subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@example.org', *args], cwd=d, check=True,
                                          capture_output=True, text=True).stdout.strip()

def test_code_version_is_the_commit_and_marks_changes(tmp_path, monkeypatch):
    monkeypatch.setenv('MEDMAAS_PROJECT_DIR', str(tmp_path))
    _git(tmp_path, 'init', '-q'); (tmp_path/'a.py').write_text('x = 1\n'); _git(tmp_path, 'add', 'a.py'); _git(tmp_path, 'commit', '-qm', 'one')
    sha = _git(tmp_path, 'rev-parse', 'HEAD')
    v = code_version()
    assert re.fullmatch('[0-9a-f]{12}', v) and sha.startswith(v), (v, sha)
    (tmp_path/'new.txt').write_text('untracked files do not change the code')
    assert code_version() == v
    (tmp_path/'a.py').write_text('x = 2\n')
    assert code_version() == v + '-dirty'
    _git(tmp_path, 'commit', '-qam', 'two')
    v2 = code_version()
    assert v2 != v and _git(tmp_path, 'rev-parse', 'HEAD').startswith(v2)

def test_code_version_outside_git_is_the_package_version(tmp_path, monkeypatch):
    monkeypatch.setenv('MEDMAAS_PROJECT_DIR', str(tmp_path))
    monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path.parent))  # no repository found above the folder either
    assert code_version() == f'medmaas_nb {__version__}'
    assert re.fullmatch(r'medmaas_nb \d+\.\d+\.\d+\S*', code_version())
