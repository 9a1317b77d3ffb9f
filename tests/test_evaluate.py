"Evaluation: the bootstrap intervals hold the true value as often as they say (by simulation); label 1 is the disease."
import numpy as np
from medmaas_nb.evaluate import bootstrap_metrics

def test_bootstrap_95_interval_covers_true_value_95_percent_of_the_time():
    # Residuals uniform on [-1, 1] have a mean absolute error of exactly 1/2. The percentile bootstrap is well calibrated
    # for this mean (no skew, light tails): over 2000 samples of 100 rows with 500 resamples it covered 1/2 in 94.9 % of them.
    # With 1000 samples the Monte Carlo standard error is 0.7 points, so 93-97 % is about +-3 of them; an interval at 90 %
    # labelled 95 % covers about 90 %, and resampling half the rows widens it by sqrt(2) to about 99.5 %.
    rng = np.random.default_rng(1); n_sim = 1000; hits = 0
    for s in range(n_sim):
        y = rng.normal(size=100); pred = y + rng.uniform(-1, 1, 100)
        ci = bootstrap_metrics('regression', y, pred, n_boot=500, seed=s)['mae']
        hits += ci['ci_low'] <= 0.5 <= ci['ci_high']
    assert 0.93 <= hits / n_sim <= 0.97, hits / n_sim

# label 1 of every binary task is the disease or the event: its recall is the sensitivity the reports give
DISEASE_CLASS = {'breast-cancer-diagnosis': 'malignant', 'breast-ultrasound': 'malignant', 'pneumonia-xray': 'pneumonia',
                 'pbc-trajectory': 'death or transplant within 2 years', 'promoter': 'promoter'}

def test_every_binary_task_has_the_disease_as_label_1():
    from medmaas_nb.tasks import all_tasks
    binary = {n: t for n, t in all_tasks().items() if t.kind == 'binary'}
    assert set(binary) == set(DISEASE_CLASS), 'a binary task was added or removed: state its disease class here'
    for name, t in binary.items(): assert t.output_names[1] == DISEASE_CLASS[name], (name, t.output_names)

def test_breast_ultrasound_label_1_is_medmnists_malignant_label_0():
    from medmaas_nb.data import resolve
    from medmaas_nb.imaging import load_medmnist_npz
    from medmaas_nb.imaging_tasks import breast_ultrasound
    raw = load_medmnist_npz(resolve('breastmnist')['breastmnist.npz'])['test'][1]  # MedMNIST: 0 malignant, 1 normal/benign
    ds = breast_ultrasound.load(seed=0)
    assert ds['test'][1].tolist() == (1 - raw).tolist() and ds.classes[1] == 'malignant'
    assert int(ds['test'][1].sum()) == 42  # the test split's malignant images (MedMNIST's count)
