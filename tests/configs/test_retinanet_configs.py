"""Detection configs: every shipped file parses and builds; the offline shapes RetinaNet
trains a few iterations and evaluates with mmdet's CocoMetric; the generator is sound."""
import glob
import json
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETECTION_CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', 'retinanet', '*.py')) +
                           glob.glob(os.path.join(ROOT, 'configs', 'gfl', '*.py')))

from focal_plugin.detection import shapes  # noqa: E402


@pytest.fixture(scope='module')
def tiny_shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp('shapes')
    shapes.make_shapes_dataset(str(out), num_train=8, num_val=4, size=64, seed=3)
    return str(out)


def test_generator_is_deterministic_and_writes_valid_coco(tmp_path):
    from pycocotools.coco import COCO
    a = shapes.make_shapes_dataset(str(tmp_path / 'a'), num_train=6, num_val=2, size=64, seed=7)
    b = shapes.make_shapes_dataset(str(tmp_path / 'b'), num_train=6, num_val=2, size=64, seed=7)
    c = shapes.make_shapes_dataset(str(tmp_path / 'c'), num_train=6, num_val=2, size=64, seed=8)
    with open(a['train']) as fa, open(b['train']) as fb, open(c['train']) as fc:
        ja, jb, jc = json.load(fa), json.load(fb), json.load(fc)
    assert ja == jb and ja != jc
    img_a = np.asarray(Image.open(tmp_path / 'a' / 'train' / '000001.png'))
    img_b = np.asarray(Image.open(tmp_path / 'b' / 'train' / '000001.png'))
    assert np.array_equal(img_a, img_b)
    coco = COCO(a['train'])  # pycocotools accepts it
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) > 0
    for ann in coco.dataset['annotations']:
        img = coco.imgs[ann['image_id']]
        x, y, w, h = ann['bbox']
        assert w >= 2 and h >= 2  # no zero-size boxes
        assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']


def test_class_frequencies_are_imbalanced(tmp_path):
    paths = shapes.make_shapes_dataset(str(tmp_path), num_train=60, num_val=1, size=64, seed=0)
    with open(paths['train']) as f:
        counts = np.bincount([a['category_id'] for a in json.load(f)['annotations']],
                             minlength=5)[1:]
    assert counts[0] > counts[1] > counts[2] > counts[3] > 0


@pytest.mark.parametrize('path', DETECTION_CONFIGS, ids=os.path.basename)
def test_config_parses_and_builds(path):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(path)
    assert 'focal_plugin' in cfg.custom_imports['imports']
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    loss_cls = cfg.model.bbox_head.loss_cls
    assert type(model.bbox_head.loss_cls).__name__ == loss_cls.type
    # what each file name claims about its loss
    name = os.path.basename(path)
    if 'stable' in name:
        assert loss_cls.type.startswith('Stable')
        assert loss_cls.get('stabilizer', 'exact') == 'exact'
    if 'mmdet-focal' in name:
        assert loss_cls.type == 'FocalLoss'
    if 'mmdet-qfl' in name or name == 'gfl_r18_fpn_shapes-cpu_base.py':
        assert loss_cls.type == 'QualityFocalLoss'
    for tag, gamma in (('g0.5', 0.5), ('g2', 2.0)):
        if tag in name:
            assert loss_cls.gamma == gamma
    for tag, beta in (('b0.5', 0.5), ('b2', 2.0)):
        if tag in name:
            assert loss_cls.beta == beta
    # every shipped detection config audits its updates with the plugin's hook
    hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
    assert 'GradientSanitizerHook' in hooks


def test_shapes_retinanet_trains_and_evaluates(tiny_shapes, tmp_path):
    from mmengine.runner import Runner
    torch.set_num_threads(1)
    cfg = Config.fromfile(os.path.join(
        ROOT, 'configs', 'retinanet', 'retinanet_r18_fpn_shapes-cpu_stable-exact-g0.5.py'))
    root = tiny_shapes + '/'
    cfg.work_dir = str(tmp_path)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.batch_size = 2
        loader.dataset.data_root = root
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = root + 'val.json'
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 2
    cfg.model.test_cfg.score_thr = 0.0  # an untrained model: keep its (poor) detections
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    assert 'coco/bbox_mAP' in metrics and 'coco/bbox_mAP_50' in metrics
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert os.path.exists(os.path.join(str(tmp_path), 'iter_2.pth'))


def test_mmdet_own_train_script_runs_a_plugin_config(tiny_shapes, tmp_path):
    """mmdet's packaged tools/train.py knows nothing of focal_plugin: custom_imports loads it."""
    import subprocess
    import sys

    import mmdet
    script = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    config = os.path.join(ROOT, 'configs', 'retinanet',
                          'retinanet_r18_fpn_shapes-cpu_stable-exact-g0.5.py')
    root = tiny_shapes + '/'
    out = subprocess.run(
        [sys.executable, script, config, '--work-dir', str(tmp_path), '--cfg-options',
         f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
         f'test_dataloader.dataset.data_root={root}', f'val_evaluator.ann_file={root}val.json',
         'train_dataloader.batch_size=2', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
         'default_hooks.checkpoint.interval=2'],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert os.path.exists(os.path.join(str(tmp_path), 'iter_2.pth'))
    assert 'StableFocalLoss' in out.stdout + out.stderr  # the printed config uses our loss


def test_shapes_dataset_generates_itself_on_first_use(tmp_path):
    from mmdet.registry import DATASETS
    root = str(tmp_path / 'shapes') + '/'
    cfg = dict(type='ShapesCocoDataset', data_root=root, ann_file='train.json',
               data_prefix=dict(img='train/'), pipeline=[],
               generate=dict(num_train=5, num_val=2, size=64, seed=1))
    dataset = DATASETS.build(cfg)
    assert len(dataset) > 0 and os.path.exists(root + 'val.json')
    assert dataset.metainfo['classes'] == shapes.CLASSES
    with pytest.raises(FileNotFoundError):
        DATASETS.build(dict(cfg, data_root=str(tmp_path / 'missing') + '/', generate=False))


def test_a_mistyped_data_root_is_not_generated(tmp_path, monkeypatch):
    """Only the documented data/shapes/ is generated without asking (issue 23)."""
    from mmdet.registry import DATASETS
    monkeypatch.chdir(tmp_path)
    cfg = dict(type='ShapesCocoDataset', ann_file='train.json', data_prefix=dict(img='train/'),
               pipeline=[])
    with pytest.raises(FileNotFoundError, match=r"data/shapez/train.json not found .*"
                       r"make_shapes_dataset.py --out data/shapez/"):
        DATASETS.build(dict(cfg, data_root='data/shapez/'))
    assert not os.path.exists('data/shapez')
    dataset = DATASETS.build(dict(cfg, data_root='data/shapes/'))  # the documented default
    assert len(dataset) > 0 and os.path.exists('data/shapes/val.json')
