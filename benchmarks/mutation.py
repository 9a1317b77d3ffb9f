"""Mutation testing of the safety-relevant modules with mutmut, one module at a time, against a named fast pytest subset.

    python benchmarks/mutation.py security            # one module
    python benchmarks/mutation.py all --max-children 2 # every module in turn

Each run works in a scratch copy (`--workdir`, default /tmp/medmaas-mutation/<module>): the package and the module's test
files are copied there and mutmut writes its mutants under that copy's `mutants/`, so the checkout is never mutated.
The summary (killed, survived, equivalent, timeout, no tests; kill rate of the non-equivalent mutants) is printed and
written to benchmarks/results/mutation_<module>.json; `--show` prints the diff of every survivor.
Mutant names are numbered per function: after a change to a module its equivalent-mutant list below needs a second look.
"""
from __future__ import annotations
import argparse, fnmatch, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the pytest files that make up its fast subset, and the functions mutated (mutmut's mangled names: `x_func`,
# `xǁClassǁmethod`; None: every function of the module)
MODULES = {
    'security': {'tests': ['tests/test_mut_security.py'], 'functions': None},
    'protocol': {'tests': ['tests/test_mut_protocol.py'], 'functions': None},
    'registry': {'tests': ['tests/test_mut_registry.py'],
                 # the trust checks: allowlists, signatures, digests, version and alias lookup (not MLflow tracking or cards)
                 'functions': ['x_signing_key_file', 'x_signing_key', 'x_key_id', 'x_sign',
                               'x__sums', 'x__read_card', 'xǁModelVersionǁverify', 'xǁModelVersionǁload', 'xǁRegistryǁ*']},
    'evaluate': {'tests': ['tests/test_mut_evaluate.py'],
                 # the code that computes metrics and intervals
                 'functions': ['x_survival_fields', 'x_compute_metrics', 'x_rank_auc', 'x__average_precision', 'x_fast_metrics',
                               'x_bootstrap_metrics', 'x_summarize_cv']},
    'deid': {'tests': ['tests/test_mut_deid.py'],
             # finding and masking PHI and the de-identified copies of reports (not the scoring of the labelled sets)
             'functions': ['x__alternation', 'x__years_upto', 'x__compile', 'x__merge', 'x__first_words', 'x__matches',
                           'x__pattern_spans', 'x__list_names', 'x_find_phi', 'x_deidentify', 'xǁDeidFilterǁ*', 'x_deid_logger',
                           'x_deidentify_html', 'x_deidentify_notebook', 'x_deidentify_report', 'x_name_lists']},
    'runtimes': {'tests': ['tests/test_mut_registry.py', 'tests/test_mut_serving.py'],
                 # the trust checks of model files, the runtimes and the batching
                 'functions': ['x_runs_code', 'x_skops_types', 'x__short', 'x_check_types', 'x_keras_types', 'x_check_keras',
                               'x_model_types', 'x_load_model', 'x__len', 'xǁModelRuntimeǁ*', 'xǁServedModelǁ*', 'x__probe',
                               'xǁSklearnRuntimeǁ*', 'x__concat', 'xǁDynamicBatcherǁ*', 'x__take', 'x_fixed_batches', 'xǁKerasRuntimeǁ*']},
}

# mutants judged equivalent after reading them: no input can tell them from the original. {module: {mutant: why}}
EQUIVALENT: dict[str, dict[str, str]] = {
    'security': {
        'x_server_secret__mutmut_42': 'token_bytes(None) draws the default, 32 bytes',
        'xǁKeyStoreǁcreate__mutmut_22': 'token_urlsafe(None) draws the default, 32 bytes',
        'xǁAuditLogǁ_open__mutmut_7': 'mode left out of os.open: the fchmod(0o600) that follows sets it',
        'xǁAuditLogǁ_open__mutmut_10': 'mode 0o601 in os.open: the fchmod(0o600) that follows sets it',
        'xǁAuditLogǁ_open__mutmut_20': 'encoding None: every line is ASCII (json.dumps escapes the rest)',
        'xǁAuditLogǁ_open__mutmut_24': 'encoding left out: every line is ASCII',
        'xǁAuditLogǁ_open__mutmut_29': "'UTF-8' names the same codec as 'utf-8'",
        'xǁKeyStoreǁ__init____mutmut_6': "_broken '' instead of None: only its truth is used",
        'xǁKeyStoreǁ_refresh__mutmut_10': "_broken '' instead of None: only its truth is used",
        'xǁKeyStoreǁ_refresh__mutmut_12': "_broken 'None' instead of the message: only its truth is used",
    },
    'protocol': {
        'x__binary__mutmut_35': "decode() defaults to UTF-8",
        'x__binary__mutmut_39': "'UTF-8' names the same codec as 'utf-8'",
        'x_check_inputs__mutmut_41': 'v2_datatype names an object array BYTES too',
        'x_check_inputs__mutmut_95': 'astype(copy=None) copies as copy=False does: the dtypes differ on this branch, so it always copies',
        'x_check_inputs__mutmut_97': 'astype copies by default: the dtypes differ on this branch, so it always copies',
        'x_check_inputs__mutmut_100': 'copy=True: the dtypes differ on this branch, so it always copies',
        'x_decode_tensor__mutmut_77': "_flat's position argument is unused",
        'x_tensor_bytes__mutmut_22': "no byte order: v2_datatype refuses non-native (big-endian) arrays first, and native is '<' on the "
                                     'little-endian hosts this runs on',
        'x_tensor_bytes__mutmut_24': 'as _22',
        'x_v2_datatype__mutmut_2': "'XXOUSXX': no NumPy dtype kind is X",
        'x_v2_datatype__mutmut_8': 'the BYTES entry (object) is reached only by object arrays, which returned before',
        'x_v2_datatype__mutmut_9': 'as _8',
        'xǁInferRequestǁparse__mutmut_80': "t.get('parameters', None): the guard has checked that it is a dict",
        'xǁInferRequestǁparse__mutmut_82': 'as _80',
    },
    'evaluate': {
        'x__average_precision__mutmut_27': "float('NAN') is float('nan')",
        'x_bootstrap_metrics__mutmut_71': "float('NAN') is float('nan')",
        'x_bootstrap_metrics__mutmut_85': "float('NAN') is float('nan')",
        'x_compute_metrics__mutmut_61': "float('NAN') is float('nan')",
        'x_compute_metrics__mutmut_72': "float('NAN') is float('nan')",
        'x_compute_metrics__mutmut_94': "float('NAN') is float('nan')",
        'x_compute_metrics__mutmut_104': "float('NAN') is float('nan')",
        'x_compute_metrics__mutmut_173': "float('NAN') is float('nan')",
        'x_fast_metrics__mutmut_11': "float('NAN') is float('nan')",
        'x_rank_auc__mutmut_12': "float('NAN') is float('nan')",
        'x__average_precision__mutmut_3': 'any sort order: ties are summed at the end of their run of equal scores',
        'x__average_precision__mutmut_5': 'as _3',
        'x__average_precision__mutmut_8': "as _3 ('MERGESORT' is accepted too)",
        'x_bootstrap_metrics__mutmut_44': 'the fallback serves survival and retrieval, which take no keyword arguments',
        'x_compute_metrics__mutmut_9': 'integer truth: scikit-learn converts it; the regression metrics are the same',
        'x_compute_metrics__mutmut_11': 'as _9',
        'x_compute_metrics__mutmut_34': 'labels 0/1 as given (int or float): scikit-learn gives the same figures',
        'x_compute_metrics__mutmut_37': 'boolean predictions count as 0/1 with labels=[0, 1]',
        'x_compute_metrics__mutmut_54': 'scikit-learn 1.9 itself returns NaN for a one-class ROC AUC',
        'x_compute_metrics__mutmut_88': 'numpy 0/0 gives NaN as the guard does',
        'x_compute_metrics__mutmut_98': 'as _88',
        'x_compute_metrics__mutmut_112': "zero_division's default also gives 0.0 (with a warning)",
        'x_compute_metrics__mutmut_124': 'class indices as floats: the same figures',
        'x_compute_metrics__mutmut_158': 'truth holds class indices 0..k-1: scikit-learn infers the same labels whenever it accepts the call',
        'x_compute_metrics__mutmut_162': 'as _158',
        'x_fast_metrics__mutmut_5': 'numeric scores: an integer array compares and sums the same',
        'x_fast_metrics__mutmut_7': 'as _5',
        'x_fast_metrics__mutmut_16': 'astype(None) is float64 too',
        'x_fast_metrics__mutmut_66': 'p & (1 + y) with y in {0, 1} equals p & (1 - y)',
        'x_fast_metrics__mutmut_89': 'no positives: rank_auc and _average_precision return NaN themselves',
        'x_fast_metrics__mutmut_95': 'as _89',
        'x_fast_metrics__mutmut_199': 'a class missing from the truth makes rank_auc NaN, so the mean is NaN anyway',
        'x_fast_metrics__mutmut_219': 'a boolean truth sums and compares as 0/1',
        'x_rank_auc__mutmut_5': 'one class: the statistic is 0/0, which NumPy makes NaN',
        'x_summarize_cv__mutmut_3': 'J is unused',
        'x_summarize_cv__mutmut_21': 'to_numpy() of a metric column: the same values; every result goes through float()',
    },
    'registry': {
        'x_signing_key__mutmut_31': "the temporary file's prefix in capitals: still hidden, removed at once",
        'x_signing_key__mutmut_37': 'token_hex(None) draws the default, 32 bytes',
        'xǁRegistryǁregister__mutmut_7': "the task folder exists (the task's lock made it): no parents to create",
        'xǁRegistryǁregister__mutmut_9': 'as _7',
        'xǁRegistryǁregister__mutmut_11': 'as _7',
        'xǁRegistryǁregister__mutmut_28': "the scratch folder's prefix in capitals: still hidden, never a version number",
    },
    'runtimes': {
        'x_runs_code__mutmut_5': "rsplit('.') without a limit: the last part is the same",
        'x_runs_code__mutmut_8': "rsplit('.', 2): the last part is the same",
        'xǁDynamicBatcherǁ_run__mutmut_8': 'left == 0 exactly: wait_for(..., 0) times out at once, as leaving the loop does',
        'xǁSklearnRuntimeǁ_array_ok__mutmut_29': 'as_array falsy gives a DataFrame, which np.asfortranarray turns into the same float array',
        'xǁSklearnRuntimeǁ_array_ok__mutmut_31': 'as _29',
        'xǁSklearnRuntimeǁ_array_ok__mutmut_33': 'as _29',
        'xǁSklearnRuntimeǁ_array_ok__mutmut_37': 'inside catch_warnings around the probe only: hides more warnings there, decides nothing',
        'xǁSklearnRuntimeǁinputs__mutmut_5': 'as _array_ok _29: the same Fortran-ordered float array',
        'xǁSklearnRuntimeǁinputs__mutmut_7': 'as inputs _5',
        'xǁSklearnRuntimeǁinputs__mutmut_8': 'as inputs _5',
        'xǁSklearnRuntimeǁinputs_v2__mutmut_5': 'as inputs _5',
        'xǁSklearnRuntimeǁinputs_v2__mutmut_7': 'as inputs _5',
        'xǁSklearnRuntimeǁinputs_v2__mutmut_8': 'as inputs _5',
        'xǁSklearnRuntimeǁwarm_up__mutmut_7': 'category left out (Warning): the message names a scikit-learn UserWarning only',
        'xǁSklearnRuntimeǁwarm_up__mutmut_11': 'the warnings module matches message patterns ignoring case',
        'xǁSklearnRuntimeǁwarm_up__mutmut_12': 'as _11',
    },
    'deid': {
        'x__matches__mutmut_7': 'end -2 or -1: no position is below either',
        'x__matches__mutmut_13': 'a match ends on a letter or digit and the next cue word starts after a separator: pos never equals end',
        'x__merge__mutmut_12': 'equal ends: the span is rebuilt unchanged',
        'x__pattern_spans__mutmut_29': 'an e-mail match ends in a letter, digit, _ or - (never in the trimmed punctuation)',
        'x__pattern_spans__mutmut_30': 'as _29',
        'x__pattern_spans__mutmut_32': 'a URL starts with a letter: trimming never reaches its start',
        'x__pattern_spans__mutmut_47': 'every pattern (and group) consumes at least one character: no empty span',
        'x_deid_logger__mutmut_7': 'get_logger has already put a DeidFilter on the logger, so this branch never runs',
        'x_deidentify_notebook__mutmut_6': "''.join of a string is the string",
        'x_deidentify_notebook__mutmut_81': 'as _6',
        'x_deidentify_report__mutmut_5': 'the default encoding is UTF-8 under the C.UTF-8 / UTF-8 locales this runs in',
        'x_deidentify_report__mutmut_7': "'UTF-8' names the same codec as 'utf-8'",
        'x_deidentify_report__mutmut_14': 'ensure_ascii=None is falsy like False',
        'x_deidentify_report__mutmut_55': "'UTF-8' names the same codec as 'utf-8'",
        'x_name_lists__mutmut_20': 'getattr(..., None) or () is () as the default () is',
        'x_name_lists__mutmut_34': 'as _20',
        'xǁDeidFilterǁfilter__mutmut_3': 'default None or False: both falsy',
    },
}

STATUS = {1: 'killed', 3: 'killed', 0: 'survived', 5: 'no tests', 33: 'no tests', 34: 'skipped', 36: 'timeout',
          -24: 'timeout', 24: 'timeout', 152: 'timeout', 255: 'timeout', 37: 'type check', None: 'not checked'}

def _setup(module:str, work:Path, fresh:bool):
    "A scratch copy of the package and the module's tests, with mutmut's configuration."
    if fresh and work.exists(): shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT/'medmaas_nb', work/'medmaas_nb', dirs_exist_ok=True, ignore=shutil.ignore_patterns('__pycache__'))
    (work/'tests').mkdir(exist_ok=True)
    for f in ['tests/conftest.py', *MODULES[module]['tests']]: shutil.copy2(ROOT/f, work/f)
    if (ROOT/'tests'/'data').is_dir(): shutil.copytree(ROOT/'tests'/'data', work/'tests'/'data', dirs_exist_ok=True)
    if (m := work/'mutants'/'tests').exists():  # tests edited since the last run in this folder: mutmut copies them again
        shutil.rmtree(m)
    tests = '\n    '.join(MODULES[module]['tests'])
    # a line that is nothing but a string literal is a docstring (or a no-op): its mutants change no behaviour
    (work/'setup.cfg').write_text(f"""[mutmut]
source_paths = medmaas_nb
only_mutate = medmaas_nb/{module}.py
pytest_add_cli_args_test_selection =
    {tests}
pytest_add_cli_args =
    -p
    no:cacheprovider
    -W
    ignore
do_not_mutate_patterns =
    ^\\s*(?:"[^"\\n]*"|'[^'\\n]*')\\s*$
timeout_multiplier = 10.0
use_git_change_detection = false
""")

def _selected(module:str, name:str)->bool:
    fns = MODULES[module]['functions']
    if fns is None: return True
    fn = name.split('.')[-1].split('__mutmut_')[0]
    return any(fnmatch.fnmatchcase(fn, p) for p in fns)

def summarize(module:str, work:Path)->dict:
    "Counts by status over the selected functions' mutants, survivors named."
    meta = json.loads((work/'mutants'/'medmaas_nb'/f'{module}.py.meta').read_text())
    pre = f'medmaas_nb.{module}.'
    codes = {k.removeprefix(pre): v for k, v in meta['exit_code_by_key'].items() if _selected(module, k)}
    eq = EQUIVALENT.get(module, {})
    by, survivors = {}, []
    for k, c in sorted(codes.items()):
        s = STATUS.get(c, 'suspicious')
        if s == 'survived' and k in eq: s = 'equivalent'
        by[s] = by.get(s, 0) + 1
        if s in ('survived', 'no tests', 'suspicious', 'not checked'): survivors.append(f'{k}: {s}')
    killed = by.get('killed', 0) + by.get('type check', 0)
    non_eq = len(codes) - by.get('equivalent', 0)
    stale = sorted(set(eq) - {k for k, c in codes.items() if STATUS.get(c) == 'survived'})
    return {'module': module, 'functions': MODULES[module]['functions'] or 'all', 'tests': MODULES[module]['tests'],
            'mutants': len(codes), 'killed': killed, 'survived': by.get('survived', 0), 'equivalent': by.get('equivalent', 0),
            'timeout': by.get('timeout', 0), 'no_tests': by.get('no tests', 0), 'other': {k: v for k, v in by.items() if k not in
            ('killed', 'type check', 'survived', 'equivalent', 'timeout', 'no tests')},
            'kill_rate': round((killed + by.get('timeout', 0)) / non_eq, 4) if non_eq else None,
            'not_surviving_any_more': stale, 'survivors': survivors}

def _save(module:str, res:dict):
    out = ROOT/'benchmarks'/'results'/f'mutation_{module}.json'
    out.parent.mkdir(exist_ok=True); out.write_text(json.dumps(res, indent=1, ensure_ascii=False) + '\n')

def run(module:str, work:Path, max_children:int, fresh:bool, show:bool)->dict:
    _setup(module, work, fresh)
    env = {**os.environ, 'MEDMAAS_DATA_DIR': os.environ.get('MEDMAAS_DATA_DIR') or str(ROOT.parent/'shared'/'data')}
    env.pop('PYTHONPATH', None)  # the mutated copy must be the only medmaas_nb the tests can import
    mutmut = [sys.executable, '-m', 'mutmut']
    names = [f'medmaas_nb.{module}.{f}__mutmut_*' for f in MODULES[module]['functions'] or ['*']]
    t0 = time.perf_counter()
    p = subprocess.run([*mutmut, 'run', '--max-children', str(max_children), *names], cwd=work, env=env, capture_output=True, text=True)
    (work/'mutmut.log').write_text(p.stdout + p.stderr)
    if p.returncode:
        sys.exit(f'mutmut failed ({p.returncode}); see {work}/mutmut.log:\n{(p.stdout + p.stderr)[-3000:]}')
    res = {**summarize(module, work), 'seconds': round(time.perf_counter() - t0, 1)}
    if show:
        for s in res['survivors']:
            name = f"medmaas_nb.{module}.{s.split(':')[0]}"
            print(subprocess.run([*mutmut, 'show', name], cwd=work, env=env, capture_output=True, text=True).stdout)
    _save(module, res)
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('module', choices=[*MODULES, 'all'])
    ap.add_argument('--workdir', type=Path, default=Path('/tmp/medmaas-mutation'), help='scratch folder (one sub-folder per module)')
    ap.add_argument('--max-children', type=int, default=2, help='mutants tested at once')
    ap.add_argument('--keep', action='store_true', help="reuse the last run's results where the code and tests are unchanged")
    ap.add_argument('--show', action='store_true', help='print the diff of every surviving mutant')
    ap.add_argument('--summary', action='store_true', help="summarize the last run again (after editing EQUIVALENT), running nothing")
    a = ap.parse_args()
    for m in (MODULES if a.module == 'all' else [a.module]):
        if a.summary:
            r = {**json.loads((ROOT/'benchmarks'/'results'/f'mutation_{m}.json').read_text()), **summarize(m, a.workdir/m)}; _save(m, r)
        else: r = run(m, a.workdir/m, a.max_children, not a.keep, a.show)
        print(json.dumps({k: v for k, v in r.items() if k != 'survivors'}, ensure_ascii=False))
        print('\n'.join(r['survivors']))
