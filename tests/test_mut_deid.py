"""De-identification case by case: the regex builders, span merging, cue-anchored matching, the name lists and the memory of
names, and the de-identified copies of logs, HTML, notebooks and reports (fast: no labelled sets, no Presidio)."""
import json, logging, re
import pytest
from medmaas_nb import deid as D
from medmaas_nb.deid import PHISpan, find_phi, deidentify, deidentify_html, deidentify_notebook, deidentify_report, DeidFilter, deid_logger

def spans(text): return [(s.start, s.end, s.kind) for s in find_phi(text)]

# --- regex builders ---
def test_years_upto_matches_exactly_the_years_up_to_y():
    for y in (1899, 1900, 1936, 1999, 2000, 2009, 2010, 2036):
        rx = re.compile(D._years_upto(y))
        got = [n for n in range(1700, 2200) if rx.fullmatch(str(n))]
        assert got == list(range(1800, y + 1)), y

def test_alternation():
    rx = re.compile(D._alternation('signed|signed by|next of kin|c/o|1z|x.y'))
    assert rx.match('signed by X').group() == 'signed by'  # longest first
    assert rx.match('Signed  By').group() == 'Signed' and rx.match('next\n of kin').group() == 'next\n of kin'
    assert rx.fullmatch('Next of kin') and rx.fullmatch('C/o') and rx.fullmatch('1z') and rx.fullmatch('X.y')
    assert not rx.fullmatch('xzy') and not rx.fullmatch('nEXT of kin') and not rx.fullmatch('2z')
    assert D._alternation('a|a|b c') == r'(?:[Bb]\s+c|[Aa])'
    assert re.compile(D._alternation('name|Name x')).match('name x').group() == 'name x'  # longest first, whatever the case
    rx = re.compile(D._alternation('^x|]y'))  # a first character that is not a letter is taken literally
    assert rx.fullmatch('^x') and rx.fullmatch(']y') and not rx.fullmatch('ax')

def test_compile_joins_the_patterns_without_a_group():
    ps = D._compile([r'a\d', r'b(\d)', r'^c'])
    assert [p.pattern for p in ps] == [r'(?:a\d)|(?:^c)', r'b(\d)'] and all(p.flags & re.M for p in ps)
    assert [m.group() for m in ps[0].finditer('x\nc a1')] == ['c', 'a1']
    assert [p.pattern for p in D._compile([r'x(y)'])] == [r'x(y)'] and D._compile([]) == []

def test_first_words():
    assert D._first_words("spoke to|Dr|next of kin|o'neil") == {'spoke', 'dr', 'next', "o'neil"}

# --- spans ---
def test_merge_joins_overlaps_keeping_the_first_kind():
    S = lambda a, b, k='NAME': PHISpan(a, b, k)
    assert D._merge([S(5, 9, 'DATE'), S(0, 3), S(2, 6, 'ID'), S(9, 12, 'AGE')]) == [S(0, 9), S(9, 12, 'AGE')]
    assert D._merge([S(0, 10, 'ID'), S(2, 4)]) == [S(0, 10, 'ID')]  # inside: unchanged
    assert D._merge([S(3, 5, 'ID'), S(3, 8, 'DATE')]) == [S(3, 8, 'DATE')]  # same start: the longer first
    assert D._merge([]) == []

def test_anchored_patterns_are_tried_at_their_cue_words_only():
    p = re.compile(D.PHI_PATTERNS['ID'][1], re.M)
    text = 'x MRN 123456 and record 99887766 mrn: 4567'
    starts = {}
    for m in D._WORD.finditer(text): starts.setdefault(m.group().lower(), []).append(m.start())
    got = [m.group(1) for m in D._matches(p, text, starts)]
    assert got == ['123456', '99887766', '4567'] == [m.group(1) for m in p.finditer(text)]
    assert list(D._matches(p, text, {})) == []  # no cue word: nothing tried
    other = re.compile(r'\d+')
    assert [m.group() for m in D._matches(other, 'a 1 b 22', {})] == ['1', '22']  # not anchored: every match
    # 'MRN' is followed by a word without digits: no match there, the next cue word ('record') gives it
    t2 = 'MRN record 55555'
    st = {}
    for m in D._WORD.finditer(t2): st.setdefault(m.group().lower(), []).append(m.start())
    assert [(m.start(), m.group(1)) for m in D._matches(p, t2, st)] == [(4, '55555')]

CASES = {
    'Pt John Smith seen 03/04/2021 at St Mary Hospital, call 555-0143.':
        'Pt [NAME] seen [DATE] at [ADDRESS], call [PHONE].',
    'Spoke with wife: mary ellen jones about the plan.': 'Spoke with wife: [NAME] about the plan.',
    'Called mary today. daughter is here.': 'Called [NAME] today. daughter is here.',
    'Maria Lopez and James Brown met JAMES later; brown eyes.': '[NAME] and [NAME] met [NAME] later; brown eyes.',
    'SMITH, MARIA came in. GARCIA, JOSE too.': '[NAME] came in. [NAME] too.',
    'Contact grace.whitfield@example.com or see https://example.org/x). Whitfield agreed, WHITFIELD signed.':
        'Contact [EMAIL] or see [URL]). [NAME] agreed, [NAME] signed.',
    'Visit www.clinic-site.com, or mail jo.o@x.io.': 'Visit [URL], or mail [EMAIL].',
    'MRN: 12345678, SSN 123-45-6789, IP 192.168.0.1, MAC 00:1A:2B:3C:4D:5E.': 'MRN: [ID], SSN [ID], IP [IP], MAC [DEVICE].',
    'The patient Patient Name: Follow up. Dr Who? The Plan.': 'The patient Patient Name: Follow up. Dr [NAME]? The Plan.',
    'She is 93 and born in 1920. Age: 95. He turned 91 years old.': 'She is [AGE] and born in [AGE]. [AGE]. He turned [AGE].',
    "Lives in Springfield, IL 62704. Dear Ms. O'Brien-Smith,": 'Lives in [ADDRESS]. Dear Ms. [NAME],',
    'tel: 5551234567 on 0207946032 phone number 4155550100': 'tel: [PHONE] on [PHONE] phone number [PHONE]',
    'Seen by Nurse Joy. Reviewed by Dr. A. Kowalski.': 'Seen by Nurse [NAME]. Reviewed by Dr. [NAME].',
    'Follow Plan Review: Echo Labs normal': 'Follow Plan Review: Echo Labs normal',
    'Mail to ann@x.org. or ANN': 'Mail to [EMAIL]. or [NAME]',
    'see http://a.org/p?q=1;, then': 'see [URL];, then',
}

@pytest.mark.parametrize('text', CASES)
def test_deidentify(text):
    assert deidentify(text) == CASES[text]

def test_find_phi_spans_and_text():
    t = 'Pt John Smith seen 03/04/2021.'
    assert find_phi(t) == [PHISpan(3, 13, 'NAME', 'John Smith'), PHISpan(19, 29, 'DATE', '03/04/2021')]
    assert find_phi('') == [] and find_phi('no identifiers here') == []

def test_name_list_details():
    assert spans('saw Maria Lopez today') == [(4, 15, 'NAME')] and spans('saw Maria Garcia-Lopez today') == [(4, 22, 'NAME')]
    assert spans('saw Maria LOPEZ today') == [(4, 9, 'NAME')]  # a surname in capitals is not joined to a first name
    assert spans('saw Maria Follow today') == [(4, 9, 'NAME')]  # nor a word that is not a name
    assert spans('saw Maria  Lopez today') == [(4, 16, 'NAME')]  # two spaces (a typing slip): still one name
    assert spans('saw Maria \u00a0Lopez today') == [(4, 16, 'NAME')]
    assert spans('saw Maria\u00a0Lopez today') == [(4, 15, 'NAME')]  # a lone non-breaking space, as word processors paste
    assert spans('saw Maria   Lopez today') == [(4, 9, 'NAME')]  # three: a column gap, not one name
    assert spans('x Maria') == [(2, 7, 'NAME')]  # the last word
    assert spans('LOPEZ, MARIA.') == [(0, 12, 'NAME')] and spans('LOPEZ,  MARIA.') == [(0, 13, 'NAME')]
    assert spans('LOPEZ MARIA.') == [(0, 11, 'NAME')] and spans('LOPEZ;MARIA.') == [] and spans('lopez, MARIA.') == []
    assert spans('STUFF, JOSE here') == [(0, 11, 'NAME')] and spans('STUFF, JOE here') == []  # four letters at least
    assert spans('MARIA alone') == []  # no word in capitals before it

def test_anchored_matching_goes_on_after_a_cue_inside_a_match():
    assert deidentify('MRN ID 12345678 and MRN 42') == 'MRN ID [ID] and MRN [ID]'

def test_a_title_before_a_word_that_is_no_name_does_not_stop_the_search():
    assert spans('Dr Follow and Dr Qqqq.') == [(17, 21, 'NAME')]

def test_lower_case_names_after_a_cue():
    assert spans('wife: mary ellen') == [(6, 16, 'NAME')] and spans('wife: mary ellen jones') == [(6, 22, 'NAME')]
    assert spans('wife: mary ellen the end') == [(6, 16, 'NAME')] and spans('wife: mary Qqq') == [(6, 10, 'NAME')]
    assert spans('wife: (mary) came') == []  # the name must follow the cue
    assert spans('wife is here; husband: joseph') == [(23, 29, 'NAME')]  # a cue without a name does not end the search
    assert spans('wife: 42. husband: joseph') == [(19, 25, 'NAME')]
    assert spans('wife: mary. the mary rose') == [(6, 10, 'NAME')]  # a name in lower case is not remembered elsewhere
    assert spans('wife: mary ellen jones moved') == [(6, 22, 'NAME')]
    assert spans('wife: mary ellen jones smith moved') == [(6, 22, 'NAME')]  # three words at most
    assert spans('wife mary is well') == [(5, 9, 'NAME')]  # stops at a stop word
    assert spans('wife: the mary') == [] and spans('wife: Mary') == [(6, 10, 'NAME')]
    assert spans('wife: zzzq') == []  # not a known name
    assert spans('wife:  mary') == [(7, 11, 'NAME')]
    assert spans('wife: mary  ellen') == [(6, 10, 'NAME')]  # two spaces end the name
    assert spans('named lopez') == [(6, 11, 'NAME')]  # a surname counts too
    assert spans('wife: mary, ellen') == [(6, 10, 'NAME')]

def test_names_are_remembered_across_the_text():
    assert spans('Dr Qwertz saw him. Later qwertz and QWERTZ and Qwertz.') == [(3, 9, 'NAME'), (36, 42, 'NAME'), (47, 53, 'NAME')]
    assert spans('Dr Qwertz and Follow. Follow up.') == [(3, 9, 'NAME')]  # a word of _NOT_NAMES is never remembered
    assert spans('Dr Ox saw him. OX left.') == [(3, 5, 'NAME')]  # short words: not in capitals
    t = 'Mail zyx.quimby@x.org. Quimby came; Zyx too; QUIMBY.'
    assert [t[a:b] for a, b, _ in spans(t)] == ['zyx.quimby@x.org', 'Quimby', 'Zyx', 'QUIMBY']
    t = 'Mail ab.grace@x.org. Grace came. Ab too.'
    assert [t[a:b] for a, b, _ in spans(t)] == ['ab.grace@x.org']  # common words, short parts
    t = 'Mail the.x9y@x.org. The came. X9y.'
    assert [t[a:b] for a, b, _ in spans(t)] == ['the.x9y@x.org']
    t = 'Mail zyx-quimby+x@x.org. Quimby came.'
    assert [t[a:b] for a, b, _ in spans(t)] == ['zyx-quimby+x@x.org', 'Quimby']

def test_not_names_are_not_names():
    assert deidentify('Patient Follow was seen') == 'Patient Follow was seen'
    assert deidentify('Mr Discharge came') == 'Mr Discharge came'

def test_deidentify_styles_and_non_text():
    assert deidentify('call 555-0143 now', '<{kind}>') == 'call <PHONE> now' and deidentify('call 555-0143', 'X') == 'call X'
    assert deidentify('') == '' and deidentify(None) is None and deidentify(5) == 5
    assert deidentify('555-0143') == '[PHONE]' and deidentify('a 555-0143 b 555-0199') == 'a [PHONE] b [PHONE]'

# --- logs ---
def _record(msg, args=(), exc_info=None, stack_info=None):
    return logging.LogRecord('medmaas_nb.x', logging.INFO, __file__, 1, msg, args, exc_info, sinfo=stack_info)

def test_the_log_filter_masks_message_arguments_traceback_and_stack():
    r = _record('patient %s called 555-0143', ('John Smith',))
    assert DeidFilter().filter(r) is True and r.msg == 'patient [NAME] called [PHONE]' and r.args is None and r.deidentified is True
    assert r.getMessage() == 'patient [NAME] called [PHONE]'
    try: raise ValueError('MRN 12345678 refused')
    except ValueError: import sys; ei = sys.exc_info()
    r = _record('failed', exc_info=ei, stack_info='Stack: call 555-0143')
    DeidFilter().filter(r)
    assert 'MRN [ID] refused' in r.exc_text and '12345678' not in r.exc_text and r.stack_info == 'Stack: call [PHONE]'
    r = _record('x'); r.exc_text = 'seen by Dr Qwertz'; DeidFilter().filter(r)
    assert r.exc_text == 'seen by Dr [NAME]'
    r = _record('call %s %s', ('555-0143',))  # arguments that do not fit: kept as text, masked
    DeidFilter().filter(r)
    assert r.msg == "call %s %s ('[PHONE]',)" and r.args is None

def test_the_log_filter_runs_once():
    r = _record('call 555-0143'); r.deidentified = True
    assert DeidFilter().filter(r) and r.msg == 'call 555-0143'

def test_deid_logger(caplog):
    log = deid_logger('medmaas_nb.test_mut_deid')
    assert log.name == 'medmaas_nb.test_mut_deid' and sum(isinstance(f, DeidFilter) for f in log.filters) == 1
    assert deid_logger('medmaas_nb.test_mut_deid') is log and sum(isinstance(f, DeidFilter) for f in log.filters) == 1
    got = []
    class Keep(logging.Handler):
        def emit(self, record): got.append(record.getMessage())
    h = Keep(); log.addHandler(h)
    try: log.warning('call %s', '555-0143')
    finally: log.removeHandler(h)
    assert got == ['call [PHONE]']
    assert deid_logger().name == 'medmaas_nb.text'

# --- documents ---
def test_html_text_is_masked_markup_kept():
    h = ('<p title="John Smith">Pt John Smith</p><script>var p = "555-0143";</script><style>.x{}</style>'
         '<!-- MRN 12345678 --> call 555-0143 <b>\n</b>')
    assert deidentify_html(h) == ('<p title="John Smith">Pt [NAME]</p><script>var p = "555-0143";</script><style>.x{}</style>'
                                  '<!-- MRN 12345678 --> call [PHONE] <b>\n</b>')
    assert deidentify_html('') == ''

def test_notebooks_are_copied_masked():
    nb = {'cells': [
        {'cell_type': 'markdown', 'source': ['Pt John Smith\n', 'call 555-0143']},
        {'cell_type': 'raw', 'source': 'MRN 12345678'},
        {'cell_type': 'code', 'source': 'x = "555-0143"', 'outputs': [
            {'output_type': 'stream', 'text': ['seen 03/04/2021\n']},
            {'output_type': 'error', 'evalue': 'MRN 12345678', 'traceback': ['a 555-0143', 'b']},
            {'output_type': 'execute_result', 'data': {'text/html': ['<b>John Smith</b>'], 'text/plain': 'call 555-0143',
                                                       'text/markdown': ['Dr Qwertz'], 'text/latex': 'call 555-0143', 'image/png': '555-0143'}}]},
        {'cell_type': 'code', 'source': '', 'outputs': [{'output_type': 'display_data', 'data': {'text/html': ['<i>a</i>', '<i>b</i>']}}]}]}
    out = deidentify_notebook(nb)
    c = out['cells']
    assert c[0]['source'] == 'Pt [NAME]\ncall [PHONE]' and c[1]['source'] == 'MRN [ID]' and c[2]['source'] == 'x = "555-0143"'
    o = c[2]['outputs']
    assert o[0]['text'] == 'seen [DATE]\n' and o[1]['evalue'] == 'MRN [ID]' and o[1]['traceback'] == ['a [PHONE]', 'b']
    assert o[2]['data'] == {'text/html': '<b>[NAME]</b>', 'text/plain': 'call [PHONE]', 'text/markdown': 'Dr [NAME]', 'text/latex': 'call [PHONE]',
                            'image/png': '555-0143'}
    assert c[3]['outputs'][0]['data'] == {'text/html': '<i>a</i><i>b</i>'}
    assert nb['cells'][0]['source'] == ['Pt John Smith\n', 'call 555-0143']  # the original is untouched
    assert deidentify_notebook({}) == {} and deidentify_notebook({'cells': [{'cell_type': 'markdown'}]})['cells'][0]['source'] == ''

def test_reports_are_written_masked_beside_nothing_else(tmp_path):
    src = tmp_path/'src'; src.mkdir(); dest = tmp_path/'out'/'deep'
    (src/'r.md').write_text('Pt John Smith é', encoding='utf-8')
    assert deidentify_report(src/'r.md', dest) == dest/'r.md' and (dest/'r.md').read_text(encoding='utf-8') == 'Pt [NAME] é'
    for suffix in ('.txt', '.csv', '.log'):
        (src/f'r{suffix}').write_text('call 555-0143'); assert deidentify_report(src/f'r{suffix}', dest).read_text() == 'call [PHONE]'
    for suffix in ('.html', '.htm'):
        (src/f'r{suffix}').write_text('<i title="555-0143">555-0143</i>')
        assert deidentify_report(src/f'r{suffix}', dest).read_text() == '<i title="555-0143">[PHONE]</i>'
    (src/'r.ipynb').write_text(json.dumps({'cells': [{'cell_type': 'markdown', 'source': 'Pt John Smith é'}]}), encoding='utf-8')
    text = deidentify_report(str(src/'r.ipynb'), str(dest)).read_text(encoding='utf-8')
    assert json.loads(text) == {'cells': [{'cell_type': 'markdown', 'source': 'Pt [NAME] é'}]} and 'é' in text and '\n "cells"' in text
    (src/'r.pdf').write_text('x')
    with pytest.raises(ValueError, match=r'^r\.pdf: cannot de-identify a \.pdf file; expected \.ipynb, \.html, \.md, \.txt, \.csv or \.log\.$'):
        deidentify_report(src/'r.pdf', dest)
    (src/'README').write_text('x')
    with pytest.raises(ValueError, match='cannot de-identify a suffix-less file'): deidentify_report(src/'README', dest)

# --- the name lists ---
def test_name_lists_drop_common_words_and_short_names(monkeypatch):
    first, last = D.name_lists()
    assert D.FIRST_NAMES <= first and 'Maria' in first and 'Lopez' in last and 'Nowak' in last
    assert not (D.COMMON_WORDS | D._NOT_NAMES) & (first - D.FIRST_NAMES) and not (D.COMMON_WORDS | D._NOT_NAMES) & last
    assert all(len(w) >= 3 and w[0].isupper() for w in last)
    assert D.name_lists() is D.name_lists()
    monkeypatch.setattr(D, '_NAME_LISTS', None)
    monkeypatch.setattr(D, 'FAKER_LOCALES', ['xx_XX', 'en_US'])  # a locale this Faker lacks is skipped
    f2, l2 = D.name_lists()
    assert 'Lopez' in l2 and 'Nowak' not in l2 and D.FIRST_NAMES <= f2 and 'Priya' in f2

def test_name_lists_take_every_faker_list(monkeypatch):
    class P:
        first_names = ['Qaf', 'Amber', 'Patient', 'Al', 'qab']; first_names_male = ['Qbm']; first_names_female = ('Qcf',)
        first_romanized_names = ['Qdr']; last_names = ['Qel', 'Amber', 'Stage', 'Ox', "Qoo'neil"]; last_romanized_names = ['Qfr']
    class Q: last_names = None
    mods = {'faker.providers.person.aa': type('M', (), {'Provider': P}), 'faker.providers.person.bb': type('M', (), {'Provider': Q})}
    monkeypatch.setattr(D.importlib, 'import_module', lambda name: mods[name])
    monkeypatch.setattr(D, 'FAKER_LOCALES', ['aa', 'bb']); monkeypatch.setattr(D, '_NAME_LISTS', None)
    first, last = D.name_lists()
    assert first == D.FIRST_NAMES | {'Qaf', 'Qbm', 'Qcf', 'Qdr'} and last == {'Qel', "Qoo'neil", 'Qfr'}
