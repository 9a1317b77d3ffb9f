"The download path of the data layer, against a real HTTP server on 127.0.0.1."
import hashlib, shutil, zipfile
from pathlib import Path
import pytest
from medmaas_nb.data import (DataFile, DatasetEntry, resolve, get_entry, ChecksumMismatch, DatasetUnavailable,
                             dataset_checksum, load_manifest)
from conftest import SHARED_DATA, free_port, require

@pytest.fixture
def needs_mirror():
    require((SHARED_DATA/'breastmnist').exists(), f'the shared data mirror is not at {SHARED_DATA} (set MEDMAAS_DATA_DIR)')

def _entry(name, url, sha, **kw):
    return DatasetEntry(name=name, title=name, kind='files', source='https://example.org', license='CC0', citation='-',
                        files=[DataFile(name=Path(url.split('#')[0]).name if '#' not in url else url.split('#')[1], url=url, sha256=[sha])], **kw)

@pytest.mark.usefixtures('needs_mirror')
def test_download_verifies_and_caches(isolated, http_server):
    base, www = http_server
    shutil.copy(SHARED_DATA/'breastmnist'/'breastmnist.npz', www/'breastmnist.npz')
    entry = get_entry('breastmnist')
    entry.files[0].url = base + 'breastmnist.npz'  # the official source, played by a local server
    paths = resolve('breastmnist', data_dir=isolated/'empty', entry=entry)
    p = paths['breastmnist.npz']
    assert p == isolated/'cache'/'breastmnist'/'breastmnist.npz'
    assert hashlib.sha256(p.read_bytes()).hexdigest() == entry.files[0].sha256[0]
    assert [q.name for q in p.parent.iterdir()] == ['breastmnist.npz']  # no temporary files left
    (www/'breastmnist.npz').unlink()  # second resolve comes from the cache, not the network
    assert resolve('breastmnist', data_dir=isolated/'empty', entry=entry)['breastmnist.npz'] == p

def test_corrupt_download_is_refused_and_nothing_is_cached(isolated, http_server):
    base, www = http_server
    (www/'a.csv').write_bytes(b'x,y\n1,2\n')
    good = hashlib.sha256(b'x,y\n1,2\n').hexdigest()
    (www/'a.csv').write_bytes(b'x,y\n1,3\n')  # the server sends different bytes
    entry = _entry('toy', base + 'a.csv', good)
    with pytest.raises(ChecksumMismatch, match='matches none of the manifest'):
        resolve('toy', data_dir=None, entry=entry)
    assert not (isolated/'cache'/'toy').exists() or not any((isolated/'cache'/'toy').iterdir())

def test_unreachable_source_gives_one_clear_error(isolated):
    entry = _entry('toy', f'http://127.0.0.1:{free_port()}/a.csv', '0'*64)
    with pytest.raises(DatasetUnavailable) as e:
        resolve('toy', data_dir=isolated/'nowhere', entry=entry)
    msg = str(e.value)
    assert 'Looked in' in msg and str(isolated/'nowhere') in msg and 'medmaas data fetch toy' in msg and 'Could not download' in msg
    assert not (isolated/'cache'/'toy'/'a.csv').exists()

def test_zip_member_download(isolated, http_server):
    base, www = http_server
    payload = b'id\trating\n1\t9\n'
    with zipfile.ZipFile(www/'bundle.zip', 'w') as z: z.writestr('folder/data.tsv', payload)
    entry = _entry('toy', base + 'bundle.zip#data.tsv', hashlib.sha256(payload).hexdigest())
    p = resolve('toy', data_dir=None, entry=entry)['data.tsv']
    assert p.read_bytes() == payload

def test_listed_files_are_each_verified(isolated, http_server):
    base, www = http_server
    (www/'d').mkdir(); (www/'d'/'q1.xml').write_text('<a/>'); (www/'d'/'q2.xml').write_text('<b/>')
    sums = ''.join(f"{hashlib.sha256((www/'d'/n).read_bytes()).hexdigest()}  d/{n}\n" for n in ('q1.xml', 'q2.xml'))
    (www/'SHA256SUMS').write_text(sums)
    entry = _entry('toy', base + 'SHA256SUMS', hashlib.sha256(sums.encode()).hexdigest(), base_url=base)
    entry.files[0].lists_files = True
    paths = resolve('toy', data_dir=None, entry=entry)
    assert set(paths) == {'SHA256SUMS', 'd/q1.xml', 'd/q2.xml'}
    (www/'d'/'q2.xml').write_text('<tampered/>'); shutil.rmtree(isolated/'cache'/'toy'/'d')
    with pytest.raises(ChecksumMismatch): resolve('toy', data_dir=None, entry=entry)

@pytest.mark.usefixtures('needs_mirror')
def test_mirror_files_match_the_manifest(isolated):
    "Every file dataset in the manifest resolves from the mirror with its recorded digest."
    for name, e in load_manifest().items():
        paths = resolve(name, data_dir=SHARED_DATA, download=False)
        assert paths and len(dataset_checksum(name, paths)) == 64

def test_tampered_file_in_data_dir_is_refused(isolated):
    d = isolated/'data'/'uci-promoters'; d.mkdir(parents=True)
    (d/'promoters.data').write_text('+,X,\t\taaaa\n')
    with pytest.raises(ChecksumMismatch, match='does not match the manifest checksum'):
        resolve('promoters', data_dir=isolated/'data', download=False)

def test_esol_downloads_from_its_source_and_is_verified(isolated, http_server):
    "The ESOL entry resolves from its official URL (played by a local server) into the cache, checked against its SHA-256."
    src = SHARED_DATA/'esol'/'delaney-processed.csv'
    require(src.exists(), f'the shared data mirror has no ESOL file at {src}')
    base, www = http_server
    shutil.copy(src, www/'delaney-processed.csv')
    entry = get_entry('esol')
    assert entry.files[0].url == 'https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/delaney-processed.csv'
    entry.files[0].url = base + 'delaney-processed.csv'
    p = resolve('esol', data_dir=isolated/'empty', entry=entry)['delaney-processed.csv']
    assert p == isolated/'cache'/'esol'/'delaney-processed.csv' and hashlib.sha256(p.read_bytes()).hexdigest() == entry.files[0].sha256[0]
    (www/'delaney-processed.csv').write_text('Compound ID,smiles\nx,CCO\n')  # a source that changed its bytes is refused
    shutil.rmtree(isolated/'cache'/'esol')
    with pytest.raises(ChecksumMismatch): resolve('esol', data_dir=isolated/'empty', entry=entry)

@pytest.mark.usefixtures('needs_mirror')
def test_bccd_downloads_file_by_file_from_its_listed_checksums(isolated, http_server):
    "BCCD's 732 files, listed with their digests in data/bccd.files.json, each fetched from base_url and verified."
    base, www = http_server
    shutil.copytree(SHARED_DATA/'bccd'/'BCCD', www/'BCCD')
    entry = get_entry('bccd'); entry.base_url = base  # the pinned GitHub commit, played by a local server
    paths = resolve('bccd', data_dir=isolated/'empty', entry=entry)
    assert len(paths) == 732 and sum(n.endswith('.jpg') for n in paths) == 364
    assert all(p.is_relative_to(isolated/'cache'/'bccd') for p in paths.values())
    assert dataset_checksum('bccd', paths) == dataset_checksum('bccd', resolve('bccd', data_dir=SHARED_DATA, download=False))
    shutil.rmtree(isolated/'cache'/'bccd')
    (www/'BCCD'/'Annotations'/'BloodImage_00007.xml').write_text('<annotation/>')  # the source changed one file
    with pytest.raises(ChecksumMismatch, match='BloodImage_00007.xml'):
        resolve('bccd', data_dir=isolated/'empty', entry=entry)

def test_metabric_downloads_from_its_sources_and_is_verified(isolated, http_server):
    "The METABRIC entry's four files resolve from their URLs (played by a local server) into the cache, each checked against its SHA-256."
    src = SHARED_DATA/'metabric'
    require(src.exists(), f'the shared data mirror has no METABRIC folder at {src}')
    base, www = http_server
    entry = get_entry('metabric')
    assert [f.name for f in entry.files] == ['metabric_clinical.tsv', 'metabric_mutations.tsv', 'metabric_survival.tsv',
                                            'metabric_IHC4_clinical_train_test.h5']
    assert all(f.url.startswith('https://raw.githubusercontent.com/') for f in entry.files)
    for f in entry.files: shutil.copy(src/f.name, www/f.name); f.url = base + f.name
    paths = resolve('metabric', data_dir=isolated/'empty', entry=entry)
    for f in entry.files: assert hashlib.sha256(paths[f.name].read_bytes()).hexdigest() == f.sha256[0]
    (www/'metabric_mutations.tsv').write_text('patientId\thugoGeneSymbol\tproteinChange\nMB-0000\tTP53\tR175H\n')  # changed bytes are refused
    shutil.rmtree(isolated/'cache'/'metabric')
    with pytest.raises(ChecksumMismatch): resolve('metabric', data_dir=isolated/'empty', entry=entry)
