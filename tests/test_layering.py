"""The package's layering, read from its source: which module imports which (at the top or inside a function).

Families -> tasks, data, evaluate, core; the service, the registry and the runtimes never name a family; nothing below
the top (the pipeline and its command line, runs on Ray, sweeps, the widgets) imports the top; no two modules import each
other at import time."""
import ast
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1]/'medmaas_nb'
FAMILIES = {'clinical', 'clinical_survival', 'clinical_trajectory', 'imaging', 'imaging_networks', 'gradcam', 'imaging_tasks', 'genomics',
            'expression', 'text', 'retrieval', 'molecules', 'molecule_graphs', 'detection',
            'treatment_effects', 'treatment_tasks', 'effect_networks',
            'fusion', 'fusion_networks'}
ON_TOP = {'pipeline', 'ray_runs', 'sweep', 'widgets', 'teaching'}
# a family module may build on its own family's base module
SAME_FAMILY = {('clinical_survival', 'clinical'), ('clinical_trajectory', 'clinical'), ('retrieval', 'text'),
               ('imaging_networks', 'imaging'), ('gradcam', 'imaging_networks'),
               ('imaging_tasks', 'imaging'), ('imaging_tasks', 'imaging_networks'), ('imaging_tasks', 'gradcam'),
               ('molecules', 'molecule_graphs'), ('treatment_tasks', 'treatment_effects'), ('treatment_tasks', 'effect_networks'),
               ('fusion', 'fusion_networks')}
# leaks still to remove, each named so that a new one fails the test
KNOWN:dict = {}

def imports(mod:str, top_only:bool=False)->set:
    "The package modules `mod` imports (relative or absolute); with `top_only`, only those run at import time."
    tree = ast.parse((PKG/f'{mod}.py').read_text())
    nodes = tree.body if top_only else ast.walk(tree)
    out = set()
    for n in nodes:
        if isinstance(n, ast.ImportFrom):
            if n.level == 1 and n.module: out.add(n.module.split('.')[0])
            elif n.level == 1: out.update(a.name for a in n.names)
            elif (n.module or '').startswith('medmaas_nb.'): out.add(n.module.split('.')[1])
            elif n.module == 'medmaas_nb': out.update(a.name for a in n.names if (PKG/f'{a.name}.py').exists())
        elif isinstance(n, ast.Import):
            out.update(a.name.split('.')[1] for a in n.names if a.name.startswith('medmaas_nb.'))
    return {m for m in out if (PKG/f'{m}.py').exists() and m != mod}

MODULES = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))

def test_the_module_list_is_complete():
    assert FAMILIES | ON_TOP | {'core', 'errors', 'data', 'evaluate', 'tasks', 'runtimes', 'registry', 'serving', 'protocol',
                                'security', 'client', 'deid', 'editors', 'survival', 'ray_serve', 'cluster'} == set(MODULES)

@pytest.mark.parametrize('mod', sorted(set(MODULES) - ON_TOP))
def test_nothing_below_imports_the_pipeline_or_the_widgets(mod):
    assert not imports(mod) & ON_TOP, f'{mod} imports {imports(mod) & ON_TOP}'

@pytest.mark.parametrize('mod', sorted(set(MODULES) - FAMILIES - ON_TOP))
def test_the_service_registry_and_base_modules_never_name_a_family(mod):
    assert not imports(mod) & FAMILIES, f'{mod} imports {imports(mod) & FAMILIES}'

@pytest.mark.parametrize('mod', sorted(FAMILIES | ON_TOP))
def test_a_family_builds_on_the_base_not_on_another_family(mod):
    other = {(mod, f) for f in imports(mod) & FAMILIES} - SAME_FAMILY - set(KNOWN)
    assert not other, f'{mod} imports the family module(s) {sorted(f for _, f in other)}'

def test_the_known_leaks_are_still_there():
    "When a leak is removed, take it off `KNOWN` (so that it cannot come back unnoticed)."
    assert all(b in imports(a) for a, b in KNOWN)

def test_no_circle_at_import_time():
    graph = {m: imports(m, top_only=True) for m in MODULES}
    def reach(a, seen):
        for b in graph[a] - seen:
            seen.add(b); reach(b, seen)
        return seen
    circles = sorted(m for m in MODULES if m in reach(m, set()))
    assert not circles, f'modules that import themselves through others at import time: {circles}'

def test_the_reader_itself_sees_imports():
    "The checks above read imports correctly: relative, absolute, function-level."
    assert {'core', 'errors', 'runtimes'} <= imports('registry', top_only=True)
    assert 'protocol' in imports('runtimes') and 'protocol' not in imports('runtimes', top_only=True)
    assert 'clinical' in imports('clinical_survival', top_only=True)
