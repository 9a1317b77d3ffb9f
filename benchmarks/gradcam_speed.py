"""Grad-CAM as a traced graph function vs the same computation run eagerly, side by side in one process.

`gradcam.gradcam` runs the Grad-CAM computation (forward pass, gradient of the class logit, weighted feature maps) through
`tf.function`, traced once per model. The eager run here calls the very same Python function without tracing
(`tf.function.python_function`), so the two differ only in how TensorFlow executes them; the maps are checked equal.

The served models are built as the full runs build them (three seeds; breast-ultrasound: two width-32 small ResNets per
seed and ten test-time views; pneumonia-xray: one width-16 small ResNet per seed, no views), with untrained weights: the
time does not depend on the weights' values. Images: the first 64 of each task's official test split.

    PYTHONPATH=$PWD MEDMAAS_DATA_DIR=../shared/data python benchmarks/gradcam_speed.py            # print the table
    PYTHONPATH=$PWD MEDMAAS_DATA_DIR=../shared/data python benchmarks/gradcam_speed.py --write    # and write gradcam_speed.md
"""
import time
import numpy as np

SERVED = {'breast-ultrasound': dict(width=32, members=2, tta='flipshift'), 'pneumonia-xray': dict(width=16, members=1, tta='none')}

def served_model(task:str, seeds:int=3):
    "The task's served model as a full run builds it, with untrained networks."
    from medmaas_nb.imaging_networks import build_member, build_served, member_prefix
    c = SERVED[task]
    nets = [[build_member('small_resnet', member_prefix(i, j, c['members']), width=c['width']) for j in range(c['members'])]
            for i in range(seeds)]
    return build_served('small_resnet', nets, 0.5, width=c['width'], tta=c['tta'])

def timed(fn, repeats:int)->float:
    "Median seconds of `repeats` calls."
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); out.append(time.perf_counter() - t0)
    return float(np.median(out))

def table(n_images:int=64, repeats:int=3)->str:
    import tensorflow as tf
    from medmaas_nb.gradcam import _gradcam_fn, gradcam
    from medmaas_nb.tasks import get_task
    lines = ['| task (served model) | images per call | eager, s | graph, s | eager / graph | max map difference |', '|---|---|---|---|---|---|']
    for task in SERVED:
        model = served_model(task)
        X = get_task(task).load()['test'][0][:n_images].astype(np.float32)
        fn = _gradcam_fn(model); gradcam(model, X[:2])  # trace once, as a service does at its first request
        for n in (1, n_images):
            x, s = tf.constant(X[:n]), tf.zeros((n, 1))
            eager = timed(lambda: fn.python_function(x, s)[0].numpy(), repeats)
            graph = timed(lambda: fn(x, s)[0].numpy(), repeats)
            diff = float(np.abs(fn.python_function(x, s)[0].numpy() - fn(x, s)[0].numpy()).max())
            c = SERVED[task]
            lines.append(f"| {task} (3 seeds x {c['members']} width-{c['width']} ResNets, views: {c['tta']}) | {n} | {eager:.3f} | "
                         f"{graph:.3f} | {eager / graph:.1f} | {diff:.1e} |")
            print(lines[-1], flush=True)
    return '\n'.join(lines)

if __name__ == '__main__':
    from common import parser, write_table
    ap = parser(__file__, __doc__); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    body = table(repeats=a.repeats)
    if a.write: write_table(__file__, 'Grad-CAM: traced graph function vs eager, same computation',
                            f'One process, median of {a.repeats} calls after tracing; maps before the views are undone (the part '
                            'TensorFlow runs). One image per call is what an explain request costs.', body)
