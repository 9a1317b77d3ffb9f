"Open Inference Protocol v2 decoding and encoding: each check, each message's field, both data forms (fast; no server)."
import json, math
import numpy as np
import pytest
from medmaas_nb.protocol import (DATATYPES, v2_datatype, decode_tensor, check_inputs, InferRequest, header_length, parse_json,
                                 tensor_bytes, encode_tensor, infer_response, response_body, model_metadata, server_metadata)
from medmaas_nb.tasks import InvalidInput

def bad(fn, *a, field=None, match=None, **k):
    "Call `fn`, expect `InvalidInput` with this field and message (a regex searched); returns the message."
    with pytest.raises(InvalidInput, match=match) as e: fn(*a, **k)
    assert e.value.field == field, e.value.field
    return str(e.value)

def T(data, dt='FP64', shape=None, name='x', **extra):
    return {'name': name, 'datatype': dt, 'shape': [len(data)] if shape is None else shape, 'data': data, **extra}

# --- datatypes ---
@pytest.mark.parametrize('dt', [k for k in DATATYPES if k != 'BYTES'])
def test_v2_datatype_names_every_numeric_dtype(dt):
    assert v2_datatype(np.zeros(2, DATATYPES[dt])) == dt

def test_big_endian_arrays_have_their_datatype_and_go_out_little_endian():
    big = np.array([1, 258], '>i4')
    assert v2_datatype(big) == 'INT32' and v2_datatype(np.zeros(2, '>f8')) == 'FP64'
    assert tensor_bytes(big) == np.array([1, 258], '<i4').tobytes()

def test_v2_datatype_of_text_and_unknown():
    for a in (np.array(['a']), np.array([b'a']), np.array(['a'], dtype=object)): assert v2_datatype(a) == 'BYTES'
    assert bad(v2_datatype, np.zeros(2, complex), field='datatype') == 'No v2 datatype for NumPy dtype complex128.'

# --- decoding one tensor ---
def test_decode_json_tensors():
    name, a = decode_tensor(T([[1, 2.5], [3, 4]], shape=[2, 2]))
    assert name == 'x' and a.dtype == np.float64 and a.tolist() == [[1, 2.5], [3, 4]]
    assert decode_tensor(T([1, 2, 3], 'INT32'))[1].dtype == np.int32
    assert decode_tensor(T([True, False], 'BOOL'))[1].tolist() == [True, False]
    a = decode_tensor(T(['a', 'é'], 'BYTES'))[1]
    assert a.tolist() == ['a', 'é'] and a.dtype == object
    assert decode_tensor(T(7, shape=[1]))[1].tolist() == [7.0]  # a scalar
    assert decode_tensor(T([[[1], [2]], [[3], 4]], shape=[4]))[1].tolist() == [1, 2, 3, 4]  # nesting is flattened in order
    assert decode_tensor(T([1, [2, [3, [4]]], 5], shape=[5]))[1].tolist() == [1, 2, 3, 4, 5]
    assert decode_tensor(T([], shape=[0, 3]))[1].shape == (0, 3)
    assert decode_tensor(T([5], shape=[]))[1].shape == ()
    assert decode_tensor(T([1], name='n' * 64))[0] == 'n' * 64

def test_decode_refuses_malformed_tensors():
    assert bad(decode_tensor, [1], 3, field='inputs[3]') == 'inputs[3] must be an object with name, datatype, shape and data.'
    for name in (None, '', 'n' * 65, 3):
        assert bad(decode_tensor, T([1], name=name), 2, field='inputs[2].name') == 'inputs[2].name must be a string of 1-64 characters.'
    assert bad(decode_tensor, T([1], 'FP128'), field='x.datatype').startswith("inputs[0] ('x'): unknown datatype 'FP128'; expected one of ['BOOL', 'BYTES'")
    bad(decode_tensor, {'name': 'x', 'datatype': 'FP64', 'data': [1]}, 4, field='inputs[4].shape', match='shape must be a list')
    for shape in (3, [1.0], [True], [-1], [2**31], ['1']):
        bad(decode_tensor, T([1], shape=shape), 4, field='inputs[4].shape', match=r'^inputs\[4\]\.shape must be a list of non-negative integers, got ')
    assert decode_tensor(T([], shape=[2**31 - 1, 0]))[1].shape == (2**31 - 1, 0)
    assert bad(decode_tensor, T([1], shape=[-1] * 30), field='inputs[0].shape').endswith(f'got {str([-1] * 30)[:60]}.')
    assert bad(decode_tensor, T([1], 'F' * 40), field='x.datatype').startswith(f"inputs[0] ('x'): unknown datatype {'F' * 20!r};")
    bad(decode_tensor, {'name': 'x', 'datatype': 'FP64', 'shape': [1]}, field='x.data', match=r"^inputs\[0\] \('x'\) has no data\.$")
    assert bad(decode_tensor, T([1, 2], shape=[3]), field='x.shape') == "'x': shape [3] needs 3 values, got 2."
    assert bad(decode_tensor, T([1, 'a']), field='x.data') == "'x': FP64 data must be numbers."
    assert bad(decode_tensor, T([1, True], 'INT64'), field='x.data') == "'x': INT64 data must be numbers."
    assert bad(decode_tensor, T([1, 0], 'BOOL'), field='x.data') == "'x': BOOL data must be booleans."
    assert bad(decode_tensor, T(['a', 1], 'BYTES'), field='x.data') == "'x': BYTES data must be strings."
    assert bad(decode_tensor, T([300], 'INT8'), field='x.data') == "'x': a value does not fit INT8."
    assert bad(decode_tensor, T([2**70], 'INT64'), field='x.data') == "'x': a value does not fit INT64."

def test_size_and_row_limits():
    assert bad(decode_tensor, T([1], shape=[50_000_001]), field='x.shape') == "inputs[0] ('x'): shape [50000001] is too large."
    bad(decode_tensor, T([1], shape=[50_000, 1001]), field='x.shape', match='too large')
    assert bad(decode_tensor, T([1], shape=[2] * 30), field='x.shape') == f"inputs[0] ('x'): shape {str([2] * 30)[:60]} is too large."
    bad(decode_tensor, T([1], shape=[50_000_000]), field='x.shape', match='needs 50000000 values')  # the limit itself is allowed
    assert decode_tensor(T([0] * 6, shape=[3, 2]), max_rows=3)[1].shape == (3, 2)
    assert bad(decode_tensor, T([0] * 8, shape=[4, 2]), max_rows=3, field='x.shape') == \
        "inputs[0] ('x'): 4 rows; at most 3 per request (the model's max_rows)."
    assert decode_tensor(T([5], shape=[]), max_rows=0)[1].tolist() == 5  # no rows to count

def test_the_row_limit_is_checked_before_the_data():
    with pytest.raises(InvalidInput, match='rows; at most'): decode_tensor({'name': 'x', 'datatype': 'FP64', 'shape': [5]}, max_rows=2)

def test_binary_tensors():
    raw = np.array([1.5, -2, 3], '<f4').tobytes()
    assert decode_tensor({'name': 'x', 'datatype': 'FP32', 'shape': [3]}, raw=raw)[1].tolist() == [1.5, -2, 3]
    raw = np.array([[1, 2], [3, 4]], '<i2').tobytes()
    a = decode_tensor({'name': 'x', 'datatype': 'INT16', 'shape': [2, 2]}, raw=raw)[1]
    assert a.tolist() == [[1, 2], [3, 4]] and a.shape == (2, 2)
    assert bad(decode_tensor, {'name': 'x', 'datatype': 'FP32', 'shape': [3]}, 1, raw=raw[:-1], field='inputs[1]') == \
        'inputs[1]: 7 bytes of binary data, expected 12 for 3 FP32 values.'

def test_binary_bytes_tensors():
    raw = b''.join(len(s).to_bytes(4, 'little') + s for s in (b'ab', b'', 'é'.encode(), b'\xff'))
    a = decode_tensor({'name': 's', 'datatype': 'BYTES', 'shape': [2, 2]}, raw=raw)[1]
    assert a.tolist() == [['ab', ''], ['é', '\ufffd']] and a.dtype == object
    assert bad(decode_tensor, {'name': 's', 'datatype': 'BYTES', 'shape': [1]}, 2, raw=b'\x03\x00\x00', field='inputs[2]') == \
        'inputs[2]: truncated BYTES element.'
    assert bad(decode_tensor, {'name': 's', 'datatype': 'BYTES', 'shape': [1]}, 2, raw=b'\x05\x00\x00\x00abcd', field='inputs[2]') == \
        'inputs[2]: a BYTES element of 5 bytes runs past the end of its data.'
    assert decode_tensor({'name': 's', 'datatype': 'BYTES', 'shape': [1]}, raw=b'\x04\x00\x00\x00abcd')[1].tolist() == ['abcd']
    assert decode_tensor({'name': 's', 'datatype': 'BYTES', 'shape': [0]}, raw=b'')[1].shape == (0,)
    assert decode_tensor({'name': 's', 'datatype': 'BYTES', 'shape': [2]}, raw=b'\x01\0\0\0a\0\0\0\0')[1].tolist() == ['a', '']  # empty last
    bad(decode_tensor, {'name': 's', 'datatype': 'BYTES', 'shape': [1]}, raw=raw, field='s.shape', match='needs 1 values, got 4')

# --- checking tensors against the declared inputs ---
DECL = [{'name': 'x', 'datatype': 'FP64', 'shape': [-1, 2]}, {'name': 't', 'datatype': 'BYTES', 'shape': [-1]}]

def test_check_inputs_casts_and_checks():
    out = check_inputs({'x': np.array([[1, 2]], np.int32), 't': np.array(['a'], dtype=object)}, DECL)
    assert out['x'].dtype == np.float64 and out['x'].tolist() == [[1, 2]] and out['t'].tolist() == ['a']
    x = np.zeros((1, 2)); assert check_inputs({'x': x, 't': np.array(['a'], object)}, DECL)['x'] is x  # no copy when it fits
    f = check_inputs({'x': np.array([[1, 2]], np.int64)}, [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 2]}])['x']
    assert f.dtype == np.float32
    u = np.zeros((1, 2), np.uint8); assert check_inputs({'x': u, 't': np.array(['a'], object)}, DECL)['x'] is u  # images stay uint8
    assert check_inputs({'b': np.array([True])}, [{'name': 'b', 'datatype': 'BOOL', 'shape': [1]}])['b'].dtype == np.bool_

def test_check_inputs_refuses():
    t = np.array(['a'], object)
    assert bad(check_inputs, {'x': np.zeros((1, 2))}, DECL, field='t') == "Expected input tensor(s) ['t', 'x']; missing ['t']."
    assert bad(check_inputs, {'x': np.zeros((1, 2)), 't': t, 'z': t}, DECL, field='z') == "Expected input tensor(s) ['t', 'x']; unexpected ['z']."
    assert bad(check_inputs, {'x': np.zeros((1, 2)), 'z': t}, DECL, field='t') == "Expected input tensor(s) ['t', 'x']; missing ['t']; unexpected ['z']."
    assert bad(check_inputs, {'x': np.zeros((1, 2)), 't': np.zeros(1)}, DECL, field='t.datatype') == "'t' has datatype FP64; expected BYTES."
    assert bad(check_inputs, {'x': np.array([['a', 'b']], object), 't': t}, DECL, field='x.datatype') == "'x' has datatype BYTES; expected FP64."
    assert bad(check_inputs, {'b': np.zeros(1)}, [{'name': 'b', 'datatype': 'BOOL', 'shape': [1]}], field='b.datatype') == \
        "'b' has datatype FP64; expected BOOL."
    assert bad(check_inputs, {'x': np.zeros((1, 3)), 't': t}, DECL, field='x.shape') == "'x' has shape [1, 3]; expected [-1, 2] (-1: any size)."
    assert bad(check_inputs, {'x': np.zeros(2), 't': t}, DECL, field='x.shape') == "'x' has shape [2]; expected [-1, 2] (-1: any size)."
    assert bad(check_inputs, {'x': np.zeros((0, 2)), 't': t}, DECL, field='x.shape') == "'x' is empty; send at least one example."
    assert check_inputs({'s': np.float64(3)}, [{'name': 's', 'datatype': 'FP64', 'shape': []}])['s'] == 3  # a scalar has no rows

# --- whole requests ---
def J(obj): return json.dumps(obj).encode()

def test_parse_a_json_request():
    r = InferRequest.parse(J({'id': 'r1', 'inputs': [T([1, 2]), T(['a'], 'BYTES', name='t')], 'outputs': [{'name': 'p'}],
                              'parameters': {'binary_data_output': True}}))
    assert r.id == 'r1' and list(r.inputs) == ['x', 't'] and r.inputs['x'].tolist() == [1, 2] and r.outputs == ['p']
    assert r.parameters == {'binary_data_output': True} and r.binary_all is True and r.binary == set()
    r = InferRequest.parse(J({'inputs': [T([1])], 'outputs': [{'name': 'p', 'parameters': {'binary_data': True}}, {'name': 'q'}]}))
    assert r.id is None and r.binary == {'p'} and r.binary_all is False and r.outputs == ['p', 'q'] and r.parameters == {}
    assert InferRequest.parse(J({'inputs': [T([1])], 'id': 'i' * 256})).id == 'i' * 256
    assert InferRequest.parse(J({'inputs': [T([1])], 'parameters': None, 'outputs': None})).outputs == []

def test_parse_refuses_malformed_requests():
    for body in ([], {'inputs': []}, {'inputs': {}}, {'x': 1}):
        assert bad(InferRequest.parse, J(body), field='inputs') == "Expected a JSON object with a non-empty list 'inputs' of tensors."
    for i in (3, 'i' * 257, None):
        assert bad(InferRequest.parse, J({'inputs': [T([1])], 'id': i}), field='id') == "'id' must be a string of at most 256 characters."
    assert bad(InferRequest.parse, J({'inputs': [T([1])], 'parameters': [1]}), field='parameters') == "'parameters' must be an object."
    assert bad(InferRequest.parse, J({'inputs': [T([1]), T([2])]}), field='x') == "Input tensor 'x' is given twice."
    for outs in ({'name': 'p'}, [{'x': 1}], [{'name': 3}], ['p']):
        assert bad(InferRequest.parse, J({'inputs': [T([1])], 'outputs': outs}), field='outputs') == "'outputs' must be a list of objects with a 'name'."
    assert bad(InferRequest.parse, J({'inputs': [T([1])], 'outputs': [{'name': 'p', 'parameters': {'binary_data': 1}}]}), field='binary_data') == \
        "outputs 'p': parameter 'binary_data' must be true or false."
    assert bad(InferRequest.parse, J({'inputs': [T([1])], 'outputs': [{'name': 'p', 'parameters': 'yes'}]}), field='binary_data') == \
        "outputs 'p': parameter 'binary_data' must be true or false."
    assert bad(InferRequest.parse, J({'inputs': [T([1])], 'parameters': {'binary_data_output': 'true'}}), field='binary_data_output') == \
        "parameters: parameter 'binary_data_output' must be true or false."
    assert bad(InferRequest.parse, J({'inputs': [T([1, 2])]}), max_rows=1, field='x.shape').endswith("at most 1 per request (the model's max_rows).")
    bad(InferRequest.parse, J({'inputs': [[1]]}), field='inputs[0]')
    long = 'o' * 100
    assert bad(InferRequest.parse, J({'inputs': [T([1])], 'outputs': [{'name': long, 'parameters': {'binary_data': 0}}]}), field='binary_data') == \
        f"outputs '{'o' * 40}': parameter 'binary_data' must be true or false."
    # a one-byte JSON header is a header (and not an object)
    assert bad(InferRequest.parse, b'1' + b'\0' * 4, 1, field='inputs').startswith('Expected a JSON object')

def binary_request(tensors, extra=b'', **req):
    head = J({'inputs': [{'name': n, 'datatype': dt, 'shape': list(a.shape), 'parameters': {'binary_data_size': len(tensor_bytes(a))}}
                         for n, dt, a in tensors], **req})
    return head + b''.join(tensor_bytes(a) for *_, a in tensors) + extra, len(head)

def test_parse_a_binary_request():
    body, n = binary_request([('a', 'FP32', np.array([1, 2], np.float32)), ('b', 'BYTES', np.array(['xy', 'z'], object))])
    r = InferRequest.parse(body, n)
    assert r.inputs['a'].tolist() == [1, 2] and r.inputs['b'].tolist() == ['xy', 'z']
    body, n = binary_request([('a', 'FP32', np.array([1, 2], np.float32))])
    for h in (0, -1, len(body) + 1):
        assert bad(InferRequest.parse, body, h, field='Inference-Header-Content-Length') == 'Inference-Header-Content-Length does not fit the body.'
    assert bad(InferRequest.parse, body + b'xyz', n, field='body') == '3 bytes of binary data after the JSON header belong to no input.'
    assert bad(InferRequest.parse, body[:-1], n, field='inputs[0].parameters') == 'inputs[0]: binary_data_size does not fit the body.'
    for size in (-1, True, 1.0, '8'):
        head = J({'inputs': [{'name': 'a', 'datatype': 'FP32', 'shape': [2], 'parameters': {'binary_data_size': size}}]})
        bad(InferRequest.parse, head + b'\0' * 8, len(head), field='inputs[0].parameters', match='binary_data_size does not fit')
    head = J({'inputs': [{'name': 'a', 'datatype': 'FP32', 'shape': [0], 'parameters': {'binary_data_size': 0}}]})
    assert InferRequest.parse(head, len(head)).inputs['a'].shape == (0,)  # the header may be the whole body
    # a tensor with JSON data beside binary ones
    head = J({'inputs': [T([1.0], name='j'), {'name': 'a', 'datatype': 'INT8', 'shape': [2], 'parameters': {'binary_data_size': 2}}]})
    r = InferRequest.parse(head + b'\x01\xff', len(head))
    assert r.inputs['j'].tolist() == [1.0] and r.inputs['a'].tolist() == [1, -1]

def test_header_length():
    assert header_length(None) is None and header_length('0') == 0 and header_length('123456789012') == 123456789012
    for v in ('', '-1', '1.5', '1e3', '١٢', '1234567890123', ' 12'):
        assert bad(header_length, v, field='Inference-Header-Content-Length') == \
            'Inference-Header-Content-Length must be a whole number of bytes (at most 12 digits).'

def test_parse_json():
    assert parse_json(b'{"a": [1, 2.5]}') == {'a': [1, 2.5]}
    assert bad(parse_json, b'', field='body') == 'The request body is empty; expected JSON.'
    assert bad(parse_json, b'{"a": ', field='body') == 'The request body is not valid JSON (Expecting value at line 1, column 7).'
    assert bad(parse_json, b'\xff', field='body') == 'The request body is not valid JSON (not UTF-8 at line ?, column ?).'
    assert bad(parse_json, b'1' * 5000, field='body') == 'The request body holds a number with too many digits.'
    assert bad(parse_json, b'[' * 100_000 + b']' * 100_000, field='body') == 'The request body is nested too deeply.'

# --- responses ---
def test_tensor_bytes():
    assert tensor_bytes(np.array([1, 2], '<i4')) == b'\x01\0\0\0\x02\0\0\0'  # little-endian
    assert tensor_bytes(np.array([[1.0, 2.0]])) == np.array([1.0, 2.0], '<f8').tobytes()
    assert tensor_bytes(np.array(['ab', 'é'])) == b'\x02\0\0\0ab\x02\0\0\0\xc3\xa9'
    assert tensor_bytes(np.array([b'x', 3], dtype=object)) == b'\x01\0\0\0x\x01\0\0\x003'
    assert tensor_bytes([0.5]) == np.array([0.5]).tobytes()

def test_encode_tensor():
    assert encode_tensor('p', np.array([[0.25, 1]])) == {'name': 'p', 'datatype': 'FP64', 'shape': [1, 2], 'data': [0.25, 1.0]}
    assert encode_tensor('s', np.array([b'a', 'b', 3], dtype=object)) == {'name': 's', 'datatype': 'BYTES', 'shape': [3], 'data': ['a', 'b', '3']}
    assert encode_tensor('p', [1, 2], binary=True) == {'name': 'p', 'datatype': 'INT64', 'shape': [2], 'parameters': {'binary_data_size': 16}}
    assert encode_tensor('s', np.array(['ab']), binary=True)['parameters'] == {'binary_data_size': 6}

def test_infer_response_and_body():
    outs = {'p': np.array([0.5, 1.0]), 'q': np.array([1, 2], np.int32)}
    r = infer_response('m', 3, outs, 'id-1')
    assert r == {'model_name': 'm', 'model_version': '3', 'id': 'id-1', 'outputs': [encode_tensor('p', outs['p']), encode_tensor('q', outs['q'])]}
    assert 'id' not in infer_response('m', 3, outs) and infer_response('m', 3, outs, '')['id'] == ''
    assert [o['name'] for o in infer_response('m', 3, outs, wanted=['q'])['outputs']] == ['q']
    assert [o['name'] for o in infer_response('m', 3, outs, wanted=[])['outputs']] == ['p', 'q']
    assert bad(infer_response, 'm', 1, outs, wanted=['q', 'z', 'a'], field='outputs') == "Unknown output(s) ['a', 'z']; this model has ['p', 'q']."
    many = [f'out{i:03d}' for i in range(40)]
    assert bad(infer_response, 'm', 1, outs, wanted=many, field='outputs') == f"Unknown output(s) {str(many)[:100]}; this model has ['p', 'q']."
    body, n = response_body(r, outs)
    assert n is None and json.loads(body) == r
    r = infer_response('m', 3, outs, binary={'q'})
    body, n = response_body(r, outs)
    assert json.loads(body[:n]) == r and body[n:] == outs['q'].astype('<i4').tobytes() and 'data' in r['outputs'][0]
    r = infer_response('m', 3, outs, binary=True)
    body, n = response_body(r, outs)
    assert body[n:] == tensor_bytes(outs['p']) + tensor_bytes(outs['q']) and all('data' not in o for o in r['outputs'])

def test_metadata():
    m = model_metadata('m', [1, 2], 'sklearn', [{'name': 'x'}], [{'name': 'p'}])
    assert m == {'name': 'm', 'versions': ['1', '2'], 'platform': 'sklearn', 'inputs': [{'name': 'x'}], 'outputs': [{'name': 'p'}]}
    assert model_metadata('m', [1], 'k', [], [], {'max_rows': 5})['parameters'] == {'max_rows': 5}
    assert 'parameters' not in model_metadata('m', [1], 'k', [], [], {})
    assert server_metadata('1.2') == {'name': 'medmaas', 'version': '1.2', 'extensions': ['binary_tensor_data']}
