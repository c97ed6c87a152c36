"""The stress-test engine: how far does training get before its first non-finite step?

* :mod:`.divergence` - ``DivergenceRecorderHook`` (the record of one run) and
  ``InterruptibleEpochBasedTrainLoop`` (stops mid-epoch), registered for configs;
* :mod:`.grid` - the cells of a sweep and the ``tools/train.py`` command of each;
* :mod:`.cells` - running cells as processes, their records, snapshots to resume elsewhere;
* :mod:`.results` - the CSV schema, loss curves, invocation log, merging sweeps;
* :mod:`.figures` - heatmaps and loss curves;
* :mod:`.sweep` - a sweep from start to end (``tools/sweep.py``, ``tools/merge_sweeps.py``).
"""
from .divergence import DivergenceRecorderHook, InterruptibleEpochBasedTrainLoop, read_divergence

__all__ = ['DivergenceRecorderHook', 'InterruptibleEpochBasedTrainLoop', 'read_divergence']
