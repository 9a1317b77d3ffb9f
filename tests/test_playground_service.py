"The playground's service mode against a real service: uvicorn on a free loopback port, asked through `medmaas_nb.client.Client`."
import threading
import numpy as np
import pytest
from conftest import free_port
from medmaas_nb.client import Client
from medmaas_nb.registry import Registry, save_model, make_card
from medmaas_nb.security import KeyStore
from medmaas_nb.tasks import get_task, fit_task
from medmaas_nb.widgets import Playground

TAB, TXT = 'diabetes-progression', 'drug-review-sentiment'

@pytest.fixture(scope='module')
def service(tmp_path_factory):
    "A diabetes-progression and a drug-review-sentiment model (quick fits) in a temporary registry, served by uvicorn on 127.0.0.1."
    import uvicorn
    from medmaas_nb.serving import create_app
    d = tmp_path_factory.mktemp('playground'); reg = Registry(d/'registry'); data = {}
    for name in (TAB, TXT):
        t = get_task(name); ds = t.load(quick=True, seed=0); r = fit_task(t, ds, quick=True, seed=0)
        save_model(r.model, d/name, t.runtime)
        data[name] = (t, ds, r.model, reg.register(name, d/name, make_card(t, ds, {'quick': True}, {}, r.chosen)))
    keys = KeyStore(d/'keys.json'); key = keys.create('playground', 'predict')
    port = free_port(); url = f'http://127.0.0.1:{port}'
    server = uvicorn.Server(uvicorn.Config(create_app(registry=reg, keys=keys, audit=False), host='127.0.0.1', port=port,
                                           log_level='error', access_log=False))
    th = threading.Thread(target=server.run, daemon=True); th.start()
    try:
        Client(url).wait_ready(120)
        yield {'url': url, 'key': key, 'data': data}
    finally:
        server.should_exit = True; th.join(20)

def test_tabular_playground_follows_the_service(service):
    t, ds, model, mv = service['data'][TAB]
    with Client(service['url'], service['key']) as c:
        pg = Playground(t, service=c, ds=ds)
        assert pg.mode == 'service' and pg.last_response['version'] == mv.version and len(pg.last_response['request_id']) == 16
        before = pg.last_prediction
        assert before == c.predict_one(TAB, pg.record)
        bmi = pg.controls['bmi'].value
        pg.controls['bmi'].value = 40.0 if bmi < 35 else 20.0  # what a user's slider move does
        after = pg.last_prediction
        assert pg.record['bmi'] == pg.controls['bmi'].value and after != before
        assert after == c.predict_one(TAB, pg.record)  # the shown prediction is the service's answer for the edited input
        assert f"{after['prediction']:.1f}" in pg.out_w.value
        local = t.predict(model, t.input_spec.validate([pg.record]))[0]['prediction']
        assert after['prediction'] == pytest.approx(local, rel=1e-9)  # and the served model is the registered one
        e = pg.last_explanation  # the service's explanation (the task's SHAP attributions), drawn as bars
        assert set(e['attributions']) == set(t.input_spec.names) and e['values']['bmi'] == pg.record['bmi']
        assert 'class="medmaas-explanation"' in pg.explain_w.value and 'bmi = ' in pg.explain_w.value

def test_text_playground_follows_the_service(service):
    t, ds, model, mv = service['data'][TXT]
    with Client(service['url'], service['key']) as c:
        pg = Playground(t, service=c, ds=ds)
        pg.controls['text'].value = 'benefits: my migraines stopped completely side effects: none comments: excellent, would recommend'
        first = pg.last_prediction
        assert first == c.predict_one(TXT, {'text': pg.controls['text'].value})
        pg.controls['text'].value = 'benefits: none at all side effects: Dr. Alvarez never warned me about the rash comments: awful, stopped it'
        second = pg.last_prediction
        assert second == c.predict_one(TXT, {'text': pg.controls['text'].value}) and second != first
        assert second['prediction'] in pg.out_w.value
        assert pg.last_explanation['words'] and 'Alvarez' not in pg.explain_w.value  # highlighted words, de-identified text

def test_service_errors_are_shown_not_raised(service):
    t, ds, _, _ = service['data'][TAB]
    with Client(service['url'], 'mm_wrong') as c:
        pg = Playground(t, service=c, ds=ds)
        assert pg.last_prediction is None and '401' in pg.error_w.value and 'API key' in pg.error_w.value
    with Client(f'http://127.0.0.1:{free_port()}', service['key'], timeout=2) as down:  # nothing listens there
        pg = Playground(t, service=down, ds=ds)
        assert pg.last_prediction is None and pg.error_w.value
