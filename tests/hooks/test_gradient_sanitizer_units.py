"""The building blocks: fused finiteness check, diagnostics, batch metainfo."""
import torch
from mmengine.structures import BaseDataElement

from focal_plugin.hooks.batch_info import batch_metainfo
from focal_plugin.hooks.finite_check import (
    any_nonfinite,
    nonfinite_counts,
    norms_by_prefix,
    tensor_norms,
)


def many_tensors():
    torch.manual_seed(0)
    return [torch.randn(s) for s in [(3, 4), (7,), (2, 2, 2), (1,), (5, 5)]]


def test_any_nonfinite_catches_any_nan_or_inf_per_group():
    tensors = many_tensors()
    assert any_nonfinite([tensors, [torch.tensor(2.0)], []]) == [False, False, False]
    for index in range(len(tensors)):
        for value in (float('nan'), float('inf'), float('-inf')):
            broken = [t.clone() for t in tensors]
            broken[index].view(-1)[-1] = value
            assert any_nonfinite([broken, tensors]) == [True, False], (index, value)
    assert any_nonfinite([tensors, [torch.tensor(float('nan'))]]) == [False, True]


def test_no_false_positive_when_a_norm_overflows_but_values_are_finite():
    # AMP-scaled gradients: every entry finite, the float32 L2 norm is not (> 1.8e19)
    scaled = [torch.full((1000,), 1e37), torch.ones(3)]
    assert not torch.isfinite(tensor_norms(scaled)[0])
    assert any_nonfinite([scaled]) == [False]
    big_half = torch.full((1024,), 60000.0, dtype=torch.float16)  # norm > fp16 max
    assert any_nonfinite([[big_half, torch.ones(3, dtype=torch.bfloat16)]]) == [False]
    assert float(tensor_norms([big_half])[0]) > 65504


def test_nonfinite_counts_and_module_norms():
    grads = [torch.tensor([1.0, float('nan'), float('inf')]), torch.tensor([3.0, 4.0]),
             torch.tensor([float('-inf')])]
    assert nonfinite_counts(grads) == [(1, 1, 0), (0, 0, 0), (0, 0, 1)]
    norms = norms_by_prefix(['head.fc.weight', 'backbone.conv.weight', 'head.fc.bias'], grads)
    assert norms['backbone'] == dict(norm=5.0, finite_norm=5.0, nonfinite_tensors=0, tensors=1)
    assert norms['head']['norm'] == 'nan' and norms['head']['nonfinite_tensors'] == 2


def test_batch_metainfo_from_the_common_collate_layouts():
    samples = [BaseDataElement(metainfo=dict(img_path=f'a/{i}.jpg', img_id=i,
                                             ori_shape=(4, 5), big=torch.zeros(100)))
               for i in range(2)]
    mmdet_style = batch_metainfo(dict(inputs=[torch.zeros(3)], data_samples=samples))
    assert mmdet_style == [dict(img_path='a/0.jpg', img_id=0, ori_shape=[4, 5]),
                           dict(img_path='a/1.jpg', img_id=1, ori_shape=[4, 5])]
    dict_of_lists = batch_metainfo(dict(inputs=torch.zeros(2, 3),
                                        data_samples=dict(img_path=['x.png', 'y.png'])))
    assert dict_of_lists == [dict(img_path='x.png'), dict(img_path='y.png')]
    assert batch_metainfo(dict(inputs=torch.zeros(2))) == []
    assert batch_metainfo(torch.zeros(2)) == []
