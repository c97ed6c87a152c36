# Runtime shared by the stress-test configs (plain MMEngine scope: every class they use is
# registered in mmengine's root registries, which mmdet's scope also reaches).
custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
# GradientSanitizerHook (policy 'stop') audits every update's gradients and the loss before
# optimizer.step and ends training at the first non-finite one, without applying it (report:
# work_dir/gradient_sanitizer_report.json). DivergenceRecorderHook writes the summary that
# tools/sweep.py reads: work_dir/divergence.json (first non-finite epoch/iteration, loss and
# accuracy per epoch); on its own it would detect and stop as well.
# The second CheckpointHook keeps one small checkpoint of the last finished epoch
# (last_epoch_N.pth) beside the interval ones: a run stopped by a signal or a crash loses at
# most the epoch in progress (resume picks the newest checkpoint).
custom_hooks = [
    dict(type='GradientSanitizerHook', policy='stop'),
    dict(type='DivergenceRecorderHook', stop=True),
    dict(type='CheckpointHook', interval=1, max_keep_ckpts=1, save_last=False,
         filename_tmpl='last_epoch_{}.pth'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
randomness = dict(seed=0)
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
load_from = None
resume = False
