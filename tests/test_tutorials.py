"""The tutorials as a course uses them: each exercise has a stub, a hint, a tested solution and a checker; the learner's
copy (solutions removed, as `make lab` writes it) runs from top to bottom with every exercise 'not answered yet'; every
glossary link names a term the glossary has. The teacher's notebooks themselves, solutions included, run under
`tools/test_notebooks.py`."""
import json, re, sys
from pathlib import Path
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT/'tools'))
from medmaas_nb.teaching import cell_tags, exercises_without_solution, student_notebook

TUTORIALS = sorted((ROOT/'nbs'/'tutorials').glob('[0-9]*.ipynb'))
GLOSSARY = ROOT/'nbs'/'tutorials'/'glossary.md'
src = lambda c: ''.join(c['source']) if isinstance(c['source'], list) else c['source']

def test_there_is_a_tutorial_per_family_and_one_on_survival():
    names = [p.stem for p in TUTORIALS]
    assert len(names) >= 5 and any('survival' in n for n in names), names

def exercises(nb:dict)->list[dict]:
    "Per exercise: its hint (the markdown above the stub), stub, solution cells and checker call."
    cells, out = nb['cells'], []
    for i, c in enumerate(cells):
        if 'exercise' not in cell_tags(c): continue
        md = next((src(cells[j]) for j in range(i - 1, -1, -1) if cells[j]['cell_type'] == 'markdown'), '')
        j, sols = i + 1, []
        while j < len(cells) and 'solution' in cell_tags(cells[j]): sols.append(src(cells[j])); j += 1
        out.append({'hint': md, 'stub': src(c), 'solutions': sols, 'checker': src(cells[j]) if j < len(cells) else ''})
    return out

@pytest.mark.parametrize('path', TUTORIALS, ids=lambda p: p.stem)
def test_every_exercise_has_stub_hint_solution_and_checker(path):
    nb = json.loads(path.read_text())
    ex = exercises(nb)
    assert len(ex) >= 2, f'{path.name}: {len(ex)} exercises'
    assert exercises_without_solution(nb) == []
    checkers = set(re.findall(r'^(\w+)\s*=\s*Exercise\(', '\n'.join(src(c) for c in nb['cells']), re.M))
    for k, e in enumerate(ex, 1):
        where = f'{path.name}, exercise {k}'
        assert '...' in e['stub'], f'{where}: the stub has no `...` for the learner'
        assert '<details>' in e['hint'], f'{where}: no collapsed hint above the stub'
        assert e['solutions'] and all(s.startswith('#| hide') for s in e['solutions']), f'{where}: solutions must be hidden on the site'
        called = re.match(r'\s*(\w+)\(', e['checker'])
        assert called and called.group(1) in checkers, f'{where}: the cell after the solution must call a checker: {e["checker"][:80]!r}'
        # a hidden solution cell also proves that this checker catches a wrong answer
        shown = '\n'.join(src(c) for c in nb['cells'] if 'solution' in cell_tags(c))
        assert re.search(rf'test_fail\(\s*lambda\s*:\s*{called.group(1)}\(', shown), f'{where}: {called.group(1)} is never shown to fail'

def test_the_learner_copy_has_no_solution():
    nb = json.loads(TUTORIALS[0].read_text())
    st = student_notebook(nb)
    assert not any('solution' in cell_tags(c) for c in st['cells'])
    assert not any('# Solution' in src(c) for c in st['cells'])
    assert len(st['cells']) == len(nb['cells']) - sum('solution' in cell_tags(c) for c in nb['cells'])

def test_glossary_links_name_terms_the_glossary_has():
    ids = set(re.findall(r'<a id="([^"]+)"></a>', GLOSSARY.read_text()))
    for p in TUTORIALS:
        text = '\n'.join(src(c) for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'markdown')
        links = set(re.findall(r'\]\(glossary\.md#([\w-]+)\)', text))
        assert len(links) >= 3, f'{p.name} links {len(links)} glossary terms'
        assert links <= ids, f'{p.name}: no glossary entry for {sorted(links - ids)}'

@pytest.mark.parametrize('path', TUTORIALS, ids=lambda p: p.stem)
def test_the_learner_copy_runs_top_to_bottom(path, tmp_path, monkeypatch):
    "As a learner who has answered nothing runs it: no error, and each exercise's checker says it is not answered yet."
    import student_notebooks
    for k, v in {'MEDMAAS_RUNS_DIR': tmp_path/'runs', 'MEDMAAS_REGISTRY_DIR': tmp_path/'registry',
                 'MLFLOW_TRACKING_URI': f"sqlite:///{tmp_path/'mlflow.db'}", 'MPLBACKEND': 'Agg', 'PYTHONPATH': str(ROOT)}.items():
        monkeypatch.setenv(k, str(v))
    copy, = student_notebooks.main_paths([path], tmp_path/'lab')
    n_ex = len(exercises(json.loads(path.read_text())))
    assert student_notebooks.run_copy(copy) == n_ex
